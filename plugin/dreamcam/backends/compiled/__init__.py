"""The compiled backend: torch.compile plus the whole frame step captured in CUDA graphs."""
