"""A worker's model side with the fast profile, in a process of its own (tests/integration/
test_performance_profile.py): warm up (compiling the planned shapes), then serve the planned shapes and one
unplanned one; prints what was compiled, the inductor cache's hits and misses, and the images' sizes. Against
moto (AWS_ENDPOINT_URL set) it shares its compiled artifacts through S3, as a worker on the fleet does."""

from __future__ import annotations

import json
import time
from typing import Any

from torch._dynamo.utils import counters

from gpu_worker.models import ModelRegistry, _SilentHooks
from gpu_worker.stages import StageItem
from gpu_worker.stages.txt2img import RUNNER
from shared.aws import client
from shared.settings import get_worker_settings
from shared.storage import BlobStore


def _snapshot() -> dict[str, int]:
    return {
        "graphs": counters["stats"]["unique_graphs"],
        "cache_hits": counters["inductor"]["fxgraph_cache_hit"],
        "cache_misses": counters["inductor"]["fxgraph_cache_miss"],
    }


def _since(before: dict[str, int]) -> dict[str, Any]:
    return {name: value - before[name] for name, value in _snapshot().items()}


def main() -> None:
    settings = get_worker_settings()
    # Against moto (the shared compile cache's test) with a blob store, as gpu_worker.process builds it.
    blobs = BlobStore(client("s3", settings)) if settings.aws_endpoint_url else None
    registry = ModelRegistry(settings, blobs)
    before, started = _snapshot(), time.monotonic()
    registry.warm_up()
    warm_up = _since(before) | {"seconds": round(time.monotonic() - started, 1)}
    before, sizes = _snapshot(), []
    for images, size in ((1, 64), (2, 64), (1, 96)):
        params = {"steps": 2, "width": size, "height": size, "guidanceScale": 7.5, "numImages": 1, "seed": 1}
        items = [StageItem(prompt="a fox", params=params) for _ in range(images)]
        outputs = RUNNER.run(items, "sd", registry, _SilentHooks())
        sizes.append(list(outputs[0].images[0].size))
    compiled = registry.applied["sd"]
    print(json.dumps({"warm_up": warm_up, "serving": _since(before) | {"sizes": sizes}, "compiled": compiled}))


if __name__ == "__main__":
    main()
