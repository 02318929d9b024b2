"""img2img: image to image with the model family's img2img pipeline (sharing txt2img's weights)."""

from __future__ import annotations

from typing import Any

from gpu_worker.families import call_arguments
from gpu_worker.stages import StageHooks, StageItem, StageOutput
from gpu_worker.stages._torch import classified_failures, diffusion_step_callback, generators, negative_prompts, seed_of
from shared.errors import BadInput


class ImageToImage:
    def warm_up_parameters(self) -> dict[str, Any]:
        return {"steps": 2, "strength": 0.5, "guidanceScale": 7.5}

    def run(self, items: list[StageItem], model: str, registry: Any, hooks: StageHooks) -> list[StageOutput]:
        if any(item.image is None for item in items):
            raise BadInput("img2img needs an input image: the previous stage's, or variables.image")
        pipeline = registry.img2img(model)
        registry.use_loras(model, pipeline, items[0].params.get("loras"))  # equal in a batch
        shared = items[0].params
        steps, strength = int(shared["steps"]), float(shared["strength"])
        if int(steps * strength) < 1:
            raise BadInput("steps * strength must be at least 1 for img2img to run a step")
        with classified_failures():
            result = pipeline(
                prompt=[item.prompt for item in items],
                image=[item.image.convert("RGB") for item in items],
                negative_prompt=negative_prompts([item.params for item in items]),
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=float(shared["guidanceScale"]),
                generator=generators([seed_of(item.params) for item in items]),
                callback_on_step_end=diffusion_step_callback(hooks, max(1, int(steps * strength))),
                output_type="pil",
                **call_arguments(registry.family(model), "img2img", shared, items[0].image.size),
            )
        return [StageOutput(images=[image]) for image in result.images]


RUNNER = ImageToImage()
