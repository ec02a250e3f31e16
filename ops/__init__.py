"""Operator tools, run by a person or by ``make``, never on a request's path: the ``resq``
command line (``ops.cli``) and ``make run`` (``ops.launcher``, with its supervisor, its
configuration check and the private Redis it starts).

``ops`` imports ``shared``, never ``api`` or ``worker`` (the launcher starts those as
processes by command line); ``api``, ``worker`` and ``shared`` never import ``ops``
(tests/test_layout.py checks both).
"""
