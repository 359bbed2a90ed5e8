"""The CLI's name for `fedai.keyfile` (key arguments and files), shared with the SDK."""

from fedai.keyfile import (
    MAX_KEY_FILE_BYTES,
    SECRET_FILE_MODE,
    KeyInputError,
    ParsedKey,
    load_or_create_secret,
    load_secret,
    parse_any,
    write_secret_file,
)

__all__ = [
    "MAX_KEY_FILE_BYTES",
    "SECRET_FILE_MODE",
    "KeyInputError",
    "ParsedKey",
    "load_or_create_secret",
    "load_secret",
    "parse_any",
    "write_secret_file",
]
