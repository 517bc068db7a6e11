"""The rows of tools/gpu_sweep.py: each a `dreamcam bench` command, in priority order, and what it decides."""

TURBO = "--arch sd-turbo --random-weights --width 512 --height 512 --t-index-list 35 --device cuda --backend compiled"
SD15 = ("--arch sd15 --random-weights --width 512 --height 512 --t-index-list 0,16,32,45 --cfg-type self "
        "--guidance 1.4 --device cuda --backend compiled")
SMOKE_TURBO = "--arch tiny --width 64 --height 64 --t-index-list 35 --device cpu --backend eager"
SMOKE_SD15 = "--arch tiny --width 64 --height 64 --t-index-list 0,16,32,45 --cfg-type self --guidance 1.4 --device cpu --backend eager"
RECIPE = "--fuse-qkv --inductor tuned"

# name -> (model, extra flags, what the row decides), in priority order: the first --jobs start at once
# (the order of the 2026-11-26 18:10 H200 run E, which measured the two loop fixes: --parallel-frames
# first, the targets beside them; FP8 and cuDNN's exhaustive search, which gained nothing, and the
# autotune rows, which never finished, last)
ROWS: dict[str, tuple[str, str, str]] = {
    "base": ("turbo", "--peer --loop",
            "the 512x512 1-step target (250 fps, 7x peer, p99 8 ms) and the live loop"),
    "par": ("turbo", "--parallel-frames --loop",
           "two frames side by side on two streams, two deep and in the live loop (H200 run E: 210.7 / 204.0 fps)"),
    "stages_fuse": ("turbo", "--overlap-stages --fuse-qkv --loop",
                   "the stages overlapped, fused projections (H200 run E: 194.1 fps in the loop)"),
    "par_fuse": ("turbo", "--parallel-frames --fuse-qkv --loop",
                "parallel frames with the fused projections: the fastest live loop (H200 run E: 209.2 fps)"),
    "w768": ("turbo", "--width 768 --height 448 --loop",
            "the 768x448 target (150 fps), engine and live loop"),
    "w768_stages": ("turbo", "--width 768 --height 448 --overlap-stages --loop",
                   "the 768x448 target with the stages overlapped (met two deep on the H100 only so): the loop too"),
    "w768_par": ("turbo", "--width 768 --height 448 --parallel-frames --loop",
                "the 768x448 target with parallel frames"),
    "sd15x4": ("sd15", "--peer",
              "the sd15 4-step target (100 fps, 4x peer)"),
    "stages": ("turbo", "--overlap-stages --loop",
              "TAESD of the neighbouring frames beside the UNet: two-deep fps vs base"),
    "sd15x4_stages": ("sd15", "--overlap-stages",
                     "the sd15 target with the stages overlapped"),
    "fb2_stages": ("turbo", "--frame-buffer 2 --overlap-stages",
                  "two frames per call with the stages overlapped (H200: 254.1 fps two deep)"),
    "fb2_par": ("turbo", "--frame-buffer 2 --parallel-frames",
               "two frames per call in each of two parallel lanes (H200 run E: 269.4 fps two deep)"),
    "profile": ("turbo", "--no-cuda-graph --frames 30 --profile 20",
               "where the ms go: per stage and top kernels"),
    "base_warm": ("turbo", "",
                 ("second start: base's compile cache in engines/torch_compile is found and used (starts once "
                  "base has ended; its startup carries the contention of the rows still compiling)")),
    "fuse": ("turbo", "--fuse-qkv",
            "splits the recipe: the fused projections alone (no longer compile)"),
    "fuse_tuned": ("turbo", RECIPE,
                  "diffusers' recipe: fused q/k/v + tuned Inductor settings"),
    "fb2": ("turbo", "--frame-buffer 2",
           "throughput at 2 frames per UNet call (one frame more latency)"),
    "fb2_peer": ("turbo", "--frame-buffer 2 --peer",
                "two frames per call against the peer at two frames per call"),
    "fp8_fuse": ("turbo", "--fp8-linear --fuse-qkv",
                "FP8 with fused projections: one input scale and one quantization for q/k/v (vs fuse)"),
    "stages_fp8": ("turbo", "--overlap-stages --fp8-linear",
                  "FP8 transformer projections (static scales) on top of the overlap: UNet-bound two-deep fps"),
    "sd15x4_stages_fp8": ("sd15", "--overlap-stages --fp8-linear",
                         "the sd15 target with the overlap and FP8 projections"),
    "fp8": ("turbo", "--fp8-linear",
           "FP8 projections alone: one-frame (sync) latency and fps"),
    "profile_fp8": ("turbo", "--fp8-linear --no-cuda-graph --frames 30 --profile 20",
                   "where the ms go with FP8 projections"),
    "stages_cudnn": ("turbo", "--overlap-stages --cudnn-exhaustive",
                    "every cuDNN convolution algorithm tried, not the first 10"),
    "sd15x4_fuse_tuned": ("sd15", RECIPE,
                         "the sd15 target with the recipe"),
    "w768_fuse_tuned": ("turbo", f"--width 768 --height 448 {RECIPE}",
                       "the 768x448 target with the recipe"),
    "fb2_fuse_tuned": ("turbo", f"--frame-buffer 2 {RECIPE}",
                      "two frames per call with the recipe"),
    "fuse_tuned_freeze": ("turbo", f"{RECIPE}-freeze",
                         "constant-folded weights on top"),
    "tuned": ("turbo", "--inductor tuned",
             "splits the recipe: the Inductor settings alone"),
    "blocks": ("turbo", "--compile-scope blocks",
              "regional compile: much shorter first start at the same fps?"),
    "blocks_autotune": ("turbo", "--compile-scope blocks --compile-mode max-autotune-no-cudagraphs",
                       "Inductor autotuning, affordable when each block shape is tuned once?"),
    "autotune": ("turbo", "--compile-mode max-autotune-no-cudagraphs",
                "whole-model autotune (did not finish in 8 min alone)"),
}
# rows that reuse another row's compile cache (a warm start), and start only once that row has ended
WARM_OF = {"base_warm": "base"}
GPU_TESTS = ("tests/gpu/test_live_setters.py tests/backends/test_pipeline_backends.py "
             "tests/backends/test_backend_select.py tests/engine/test_device_framing.py "
             "tests/backends/test_compiled_knobs.py tests/models/test_loading.py tests/backends/test_staged_step.py "
             "tests/backends/test_fp8.py tests/backends/test_parallel_step.py tests/runtime/test_pace.py "
             "tests/backends/test_backend_protocol.py tests/backends/test_feedback_step.py "
             "tests/backends/test_compiled_sdxl.py tests/backends/test_attention_bank_backends.py "
             "tests/backends/test_controlnet_backends.py")
