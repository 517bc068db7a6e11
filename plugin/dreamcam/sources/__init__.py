"""Sources: where frames come from (webcam, screen, file, image, test pattern) and the --source parser."""
