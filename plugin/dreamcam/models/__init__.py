"""Models: loading pipelines (hub id, folder, single file, LoRA), the tiny test pipelines, architectures, hub access."""
