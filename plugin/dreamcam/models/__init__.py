"""Models: the pipelines `StreamEngine` runs on.

Floors, lowest first: `paths` (hub ids, paths, checkpoint checks) and `quiet` (library chatter);
`pipelines` (the offline tiny pipeline, moving a pipeline), `archs` (real architectures with
random weights), `hub` (is the hub reachable); `components` (VAE and LoRA); `loading`
(`load_pipeline`: hub id, folder or single file, with its VAE and LoRAs).
"""
