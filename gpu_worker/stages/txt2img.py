"""txt2img: text to image with the model family's diffusers pipeline, a batch of prompts in one call."""

from __future__ import annotations

from typing import Any

from gpu_worker.families import call_arguments
from gpu_worker.stages import StageHooks, StageItem, StageOutput
from gpu_worker.stages._torch import (
    classified_failures,
    diffusion_step_callback,
    generators,
    negative_prompts,
    scheduler_named,
    seed_of,
)


class TextToImage:
    def warm_up_parameters(self) -> dict[str, Any]:
        return {"steps": 1, "width": 64, "height": 64, "guidanceScale": 7.5, "numImages": 1}

    def run(self, items: list[StageItem], model: str, registry: Any, hooks: StageHooks) -> list[StageOutput]:
        pipeline = registry.diffusion(model)
        registry.use_loras(model, pipeline, items[0].params.get("loras"))  # equal in a batch
        shared = items[0].params  # the batch key makes these equal across items
        per_item = int(shared.get("numImages", 1))
        seeds = [seed_of(item.params) + image for item in items for image in range(per_item)]
        with classified_failures(), scheduler_named(pipeline, shared.get("scheduler")):
            result = pipeline(
                prompt=[item.prompt for item in items],
                negative_prompt=negative_prompts([item.params for item in items]),
                num_inference_steps=int(shared["steps"]),
                guidance_scale=float(shared["guidanceScale"]),
                width=int(shared["width"]),
                height=int(shared["height"]),
                num_images_per_prompt=per_item,
                generator=generators(seeds),
                callback_on_step_end=diffusion_step_callback(hooks, int(shared["steps"])),
                output_type="pil",
                **call_arguments(registry.family(model), "txt2img", shared),
            )
        images = result.images
        return [StageOutput(images=images[i * per_item : (i + 1) * per_item]) for i in range(len(items))]


RUNNER = TextToImage()
