"""The server libraries of Segment and PostHog for Python, pointed at a test
engine (tests/compat_libraries.rs): each sends a page view, a track with
properties and an identify, then flushes and exits.

    ENGINE_URL=http://127.0.0.1:PORT WRITE_KEY=pk_… RUN=<unique> [RETRIES=n] python servers.py

Prints one JSON line per library naming what it sent.
"""

import json
import os
import sys

import segment.analytics as analytics
from posthog import Posthog

url, key, run = os.environ.get("ENGINE_URL"), os.environ.get("WRITE_KEY"), os.environ.get("RUN")
if not (url and key and run):
    print("usage: ENGINE_URL=… WRITE_KEY=… RUN=… python servers.py", file=sys.stderr)
    sys.exit(2)

retries = int(os.environ.get("RETRIES", "3"))
errors = []
analytics.write_key = key
analytics.host = url
analytics.gzip = True
analytics.max_retries = retries
analytics.on_error = lambda e, batch: errors.append(str(e))
anon, user = f"{run}-py-segment-anon", f"{run}-py-segment-user"
analytics.page(anonymous_id=anon, name="Pricing", properties={
    "path": "/py/pricing", "url": "https://py.example/py/pricing", "title": "Py Pricing", "referrer": "https://ref.example/"})
analytics.track(anonymous_id=anon, user_id=user, event="Py Signed Up", properties={"plan": "pro", "seats": 3})
analytics.identify(anonymous_id=anon, user_id=user, traits={"email": "py@example.com"})
analytics.flush()
analytics.shutdown()
print(json.dumps({"lib": "segment-analytics-python", "anonymousId": anon, "userId": user, "errors": errors}))

ph_errors = []
ph = Posthog(key, host=url, gzip=True, max_retries=retries, flush_interval=0.3,
             on_error=lambda e, batch: ph_errors.append(str(e)))
distinct = f"{run}-py-posthog-user"
session = f"{run}-py-posthog-session"
ph.capture("$pageview", distinct_id=distinct, properties={
    "$current_url": "https://py.example/py/docs", "title": "Py Docs", "$session_id": session})
ph.capture("py plan upgraded", distinct_id=distinct, properties={"plan": "team", "$session_id": session})
ph.set(distinct_id=distinct, properties={"email": "py-ph@example.com"})
ph.flush()
ph.shutdown()
print(json.dumps({"lib": "posthog", "distinctId": distinct, "errors": ph_errors}))
