"""The one exception type the CLI and the GUI show to users as a single line."""


class CasaError(Exception):
    """A problem with the user's inputs or settings: says what is wrong and what to do.

    The text speaks of settings by name, never by a command-line flag; ``setting`` names the
    one at fault (``device``, ``rank``, ``layers``, ``lora_file``, a method parameter ...),
    so that the CLI can point at its flag and the GUI at its field; ``example`` is a value for
    it that would do.
    """

    def __init__(self, what: str, todo: str = "", *, setting: str | None = None, example: str | None = None):
        self.what = what
        self.todo = todo
        self.setting = setting
        self.example = example
        super().__init__(f"{what}; {todo}" if todo else what)


class Cancelled(Exception):
    """The run was cancelled between two layers; nothing was written."""


class OutOfMemory(CasaError):
    """The GPU ran out of memory on one layer; the CPU or float32 may still work."""

    def __init__(self, module: str):
        self.module = module
        super().__init__(f"the GPU ran out of memory on {module}",
                         "use the cpu device, float32 precision, or close other programs using the GPU",
                         setting="device", example="cpu")
