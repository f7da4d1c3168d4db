"""Track usage until a usage limit stops it (docs/limits.md; runs against `aicm serve`)."""

import asyncio
import os

from aicm import AsyncTracker, UsageLimitExceeded

# `aicm serve` listens here; the collector takes any key of the form prefix.key-id.
os.environ.setdefault("AICM_API_BASE", "http://127.0.0.1:8765")
os.environ.setdefault("AICM_API_KEY", "sk-demo.local-key")

# A long call's tokens: 0.90 dollars at gpt-5's prices (1.25 $/M input, 10 $/M output).
USAGE = {"input_tokens": 320_000, "output_tokens": 50_000}
DOLLARS_PER_CALL = 0.90


async def main() -> None:
    async with AsyncTracker() as tracker:
        for call in range(1, 11):
            try:
                await tracker.track("openai", "gpt-5", USAGE, client_customer_key="acme")
            except UsageLimitExceeded as exc:
                print(f"refused: {exc}")
                return
            print(f"tracked {call} ({call * DOLLARS_PER_CALL:.2f} dollars so far)")


if __name__ == "__main__":
    asyncio.run(main())
