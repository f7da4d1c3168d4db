"""A Django view that records usage with the sync Tracker (settings-less, one file)."""

from __future__ import annotations

import django
from django.conf import settings

settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="guide-only")
django.setup()

from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

import aicm  # noqa: E402

# One tracker per process, shared by every request and thread. MEM_QUEUE keeps
# track() at a few microseconds; the background worker sends batches.
tracker = aicm.Tracker(delivery_type="mem_queue")


def summarise(request: HttpRequest) -> JsonResponse:
    customer = request.GET.get("customer", "anonymous")
    usage = {"input_tokens": 640, "output_tokens": 75}  # what your LLM call reported
    tracker.track("openai", "gpt-5-mini", usage, client_customer_key=customer)
    return JsonResponse({"summary": "..."})


urlpatterns = [path("summarise", summarise)]


if __name__ == "__main__":
    from django.test import Client

    client = Client()
    for customer in ("acme", "globex", "acme"):
        assert client.get("/summarise", {"customer": customer}).status_code == 200
    left = tracker.flush(timeout=5)  # a server would leave this to the exit hook
    print(f"3 requests served, {left} records left")
