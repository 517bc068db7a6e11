"""The TensorRT backend: ONNX export, engine build with a timing cache, and running the plans."""
