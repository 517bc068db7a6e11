"""A real sink thread that keeps every frame it is given (the runner tests' eyes on the output)."""

from dreamcam.sinks import Sink


class RecordingSink(Sink):
    kind = "record"
    depth = 1000

    def __init__(self, width, height):
        super().__init__(width, height)
        self.frames = []

    def _send(self, frame):
        self.frames.append(frame)
