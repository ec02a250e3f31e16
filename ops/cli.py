"""``resq``: the operator's command line, a client of a running resq's admin API over HTTP.

    resq queue [--watch [SECONDS]]           depths, totals, 1m/5m/15m rates and latencies
    resq workers                             workers and the jobs they are running
    resq responses list|show|cancel|requeue  find and act on responses
    resq queues pause|resume NAME            stop or restart a queue's consumption
    resq prompts pull DIR                    a tenant's prompts into YAML files, one a prompt
    resq prompts push DIR [--dry-run]        the server brought in line with those files

The API's URL comes from ``--url`` or ``RESQ_URL``, else from ``RESQ_HOST``/``RESQ_PORT`` as
the server reads them (default ``http://127.0.0.1:8080``); the admin key from ``--key`` or
``RESQ_ADMIN_KEY``, except for ``prompts``, which acts as a tenant: a tenant's API key from
``--key`` or ``RESQ_API_KEY`` (none in open mode). ``--json`` prints the API's JSON as it came
(for ``prompts``, a summary of what was done).
Times are shown in UTC.

Exit status: 0 done; 1 the API answered with an error (its message goes to stderr), or a prompt
file is bad or at odds with the server; 2 the API could not be reached, or the command line was
wrong. Never a traceback.

The commands and the command line are here; the HTTP client is ``ops.admin_client``, the
text views are ``ops.render`` and the prompt files ``ops.prompt_files``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from ops.admin_client import (
    ADMIN_KEY_ENV,
    API_KEY_ENV,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_URL,
    AdminApi,
    CliError,
    Json,
    default_url,
)
from ops.render import render_queue, render_response, render_responses, render_workers

DEFAULT_WATCH_SECONDS = 2.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, erase the screen
QUEUE_PATH = "/v1/admin/queue"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _segment(value: str) -> str:
    return quote(value, safe="")


# ---- commands ------------------------------------------------------------------------------


def _emit(args: argparse.Namespace, data: Json, text: str) -> int:
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def cmd_queue(api: AdminApi, args: argparse.Namespace) -> int:
    if args.watch is None:
        data = api.get(QUEUE_PATH)
        return _emit(args, data, render_queue(data, api.url))
    return watch_queue(api, interval=args.watch, as_json=args.json, out=sys.stdout)


def watch_queue(
    api: AdminApi,
    *,
    interval: float,
    as_json: bool,
    out: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Redraw the queue view every ``interval`` seconds until Ctrl-C (exit 0). The screen is
    cleared only on a terminal; elsewhere frames follow each other. A failure on the first
    fetch ends the command as usual; a later one is shown in place and retried."""
    clear = out.isatty()
    note = f"every {interval:g}s, Ctrl-C stops"
    first = True
    try:
        while True:
            try:
                data = api.get(QUEUE_PATH)
                frame = json.dumps(data, indent=2) if as_json else render_queue(data, api.url, note)
            except CliError as exc:
                if first:
                    raise
                frame = f"resq queue  {api.url}  ({note})\n\n{exc.message}"
            first = False
            out.write((CLEAR_SCREEN if clear else "") + frame + ("\n" if clear else "\n\n"))
            out.flush()
            sleep(interval)
    except KeyboardInterrupt:
        return 0


def cmd_workers(api: AdminApi, args: argparse.Namespace) -> int:
    data = api.get("/v1/admin/workers")
    return _emit(args, data, render_workers(data))


def cmd_responses_list(api: AdminApi, args: argparse.Namespace) -> int:
    filters = {
        "status": args.status,
        "model": args.model,
        "tenant": args.tenant,
        "older_than": None if args.older_than is None else _number(args.older_than),
        "limit": None if args.limit is None else str(args.limit),
        "after": args.after,
    }
    params = {k: v for k, v in filters.items() if v is not None}
    data = api.get("/v1/admin/responses", params)
    return _emit(args, data, render_responses(data, time.time()))


def cmd_responses_show(api: AdminApi, args: argparse.Namespace) -> int:
    data = api.get(f"/v1/admin/responses/{_segment(args.id)}")
    return _emit(args, data, render_response(data, time.time()))


def cmd_responses_act(api: AdminApi, args: argparse.Namespace) -> int:
    data = api.post(f"/v1/admin/responses/{_segment(args.id)}/{args.action}")
    return _emit(args, data, render_response(data, time.time()))


def cmd_queues_act(api: AdminApi, args: argparse.Namespace) -> int:
    data = api.post(f"/v1/admin/queues/{_segment(args.name)}/{args.action}")
    state = "paused" if data.get("paused") else "running"
    return _emit(args, data, f"queue {data.get('name', args.name)}: {state}")


def cmd_prompts(api: AdminApi, args: argparse.Namespace) -> int:
    # Imported here: the version schemas (pydantic) take longer to import than the other
    # commands take to run.
    from ops import prompt_files

    say = (lambda line: None) if args.json else print
    directory = Path(args.dir)
    if args.action == "pull":
        data: Json = {"files": prompt_files.pull(api, directory, say)}
    else:
        dry_run = args.dry_run
        data = {
            "dry_run": dry_run,
            "prompts": prompt_files.push(api, directory, say, dry_run=dry_run),
        }
    if args.json:
        print(json.dumps(data, indent=2))
    return 0


# ---- command line ----------------------------------------------------------------------------


def _positive(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {raw!r}")
    return value


def _common(key_env: str = ADMIN_KEY_ENV) -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (``resq --json queue`` and
    ``resq queue --json``); defaults are set once, on the top-level parser."""
    admin = key_env == ADMIN_KEY_ENV
    key = "the admin key" if admin else "a tenant's API key"
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--url",
        help=f"the resq API (env RESQ_URL, else RESQ_HOST/RESQ_PORT; default {DEFAULT_URL})",
    )
    common.add_argument("--key", help=f"{key} (env {key_env})")
    common.add_argument(
        "--json", action="store_true", help="print the API's JSON" if admin else "print a summary"
    )
    common.add_argument(
        "--timeout", type=_positive, metavar="SECONDS", help="seconds per request (default 30)"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="resq",
        description="Operate a running resq through its admin API.",
        epilog="Exit status: 0 done, 1 the API answered with an error (or a prompt file is bad),"
        " 2 unreachable or usage.",
        parents=[_common()],  # its own copy: set_defaults changes the actions it holds
    )
    parser.set_defaults(
        url=None, key=None, json=False, timeout=DEFAULT_TIMEOUT_SECONDS, key_env=ADMIN_KEY_ENV
    )
    commands = parser.add_subparsers(metavar="COMMAND", required=True)

    queue = commands.add_parser("queue", parents=[common], help="queue depths, rates, latencies")
    queue.add_argument(
        "--watch",
        nargs="?",
        type=_positive,
        const=DEFAULT_WATCH_SECONDS,
        metavar="SECONDS",
        help=f"redraw every SECONDS (default {DEFAULT_WATCH_SECONDS:g}) until Ctrl-C",
    )
    queue.set_defaults(run=cmd_queue)
    workers = commands.add_parser("workers", parents=[common], help="workers and their jobs")
    workers.set_defaults(run=cmd_workers)

    responses = commands.add_parser("responses", help="list, show, cancel, requeue responses")
    actions = responses.add_subparsers(metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="responses, newest first")
    listing.add_argument("--status", help="queued, in_progress, completed, failed, …")
    listing.add_argument("--model")
    listing.add_argument("--tenant")
    listing.add_argument("--older-than", type=float, metavar="SECONDS", help="created before")
    listing.add_argument("--limit", type=int, metavar="N")
    listing.add_argument("--after", metavar="ID", help="the page after this id")
    listing.set_defaults(run=cmd_responses_list)
    show = actions.add_parser("show", parents=[common], help="one response, timeline, webhooks")
    show.add_argument("id")
    show.set_defaults(run=cmd_responses_show)
    for action, text in (("cancel", "cancel a response"), ("requeue", "run a response again")):
        act = actions.add_parser(action, parents=[common], help=text)
        act.add_argument("id")
        act.set_defaults(run=cmd_responses_act, action=action)

    queues = commands.add_parser("queues", help="pause or resume a queue")
    queue_actions = queues.add_subparsers(metavar="ACTION", required=True)
    for action, text in (("pause", "stop taking jobs from"), ("resume", "take jobs again from")):
        act = queue_actions.add_parser(action, parents=[common], help=f"{text} queue NAME")
        act.add_argument("name", metavar="NAME")
        act.set_defaults(run=cmd_queues_act, action=action)

    _add_prompts(commands)
    return parser


def _add_prompts(commands: Any) -> None:
    """``resq prompts pull|push DIR``, with a tenant's key (``ops.prompt_files``)."""
    prompts = commands.add_parser("prompts", help="a tenant's prompts to and from YAML files")
    prompt_actions = prompts.add_subparsers(metavar="ACTION", required=True)
    as_tenant = _common(API_KEY_ENV)
    pull = prompt_actions.add_parser(
        "pull", parents=[as_tenant], help="write every prompt into DIR, one YAML file each"
    )
    push = prompt_actions.add_parser(
        "push", parents=[as_tenant], help="create prompts and add versions as DIR's files say"
    )
    push.add_argument("--dry-run", action="store_true", help="only show what push would do")
    for act, action in ((pull, "pull"), (push, "push")):
        act.add_argument("dir", metavar="DIR", help="the folder of prompt files (*.yaml, *.yml)")
        act.set_defaults(run=cmd_prompts, action=action, key_env=API_KEY_ENV)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (argparse has printed it)
        return exc.code if isinstance(exc.code, int) else 0
    url = args.url or default_url(os.environ)
    key = args.key or os.environ.get(args.key_env)
    try:
        with AdminApi(url, key, timeout=args.timeout, key_env=args.key_env) as api:
            return int(args.run(api, args))
    except CliError as exc:
        print(f"resq: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `resq responses list | head`: the reader left; so do we
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
