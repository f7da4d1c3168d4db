"""A plain script: track now (IMMEDIATE), or queue many and let the exit hook deliver."""

from __future__ import annotations

import aicm


def main() -> None:
    # IMMEDIATE (the Tracker's default): track() sends now and returns the verdict.
    with aicm.Tracker() as tracker:
        result = tracker.track(
            "openai",
            "gpt-5-mini",
            {"input_tokens": 10, "output_tokens": 20},
            client_customer_key="acme",
        )
        print(result.status, result.ok)

    # A batch job: queue in memory, sent in batches in the background. No close() needed:
    # when the script ends, the exit hook delivers what is queued (within close_timeout).
    batch = aicm.Tracker(delivery_type="mem_queue")
    for row in range(100):
        batch.track("openai", "gpt-5-mini", {"input_tokens": row}, client_customer_key="globex")


if __name__ == "__main__":
    main()
