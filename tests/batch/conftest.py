from tests.batch.support import batch_emu, batch_emulator, context  # noqa: F401  (fixtures for this directory)
