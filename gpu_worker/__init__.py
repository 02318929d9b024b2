"""The GPU worker: long-polls its in-queue, runs pipeline stages with diffusers/transformers, reports back."""
