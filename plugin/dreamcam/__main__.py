from dreamcam.cli import console_main

console_main()
