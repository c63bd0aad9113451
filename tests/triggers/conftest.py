from tests.batch.support import (  # noqa: F401  (fixtures for this directory)
    batch_emu,
    batch_emulator,
    paused_emu,
    paused_emulator,
)
