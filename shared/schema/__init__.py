"""The Responses wire schema: requests, items, the Response object, events."""
