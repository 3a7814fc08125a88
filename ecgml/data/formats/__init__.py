"""Readers and writers of the on-disk formats the two datasets use, one module per format:
:mod:`~ecgml.data.formats.wfdb` (WFDB headers and format-16 ``.dat`` files),
:mod:`~ecgml.data.formats.matv4` (MATLAB v4 ``.mat`` files) and :mod:`~ecgml.data.formats.challenge`
(the Challenge's ``.mat`` + header records). Every reader raises :class:`DataFormatError` naming the file.
"""

from ecgml.data.formats.challenge import write_challenge_record
from ecgml.data.formats.errors import DataFormatError
from ecgml.data.formats.matv4 import MatV4, read_matv4, write_matv4
from ecgml.data.formats.wfdb import (
    INT16_NAN,
    SignalSpec,
    WfdbHeader,
    build_header,
    format_header,
    parse_header,
    read_dat16,
    read_header,
    to_digital,
    to_physical,
    wfdb_checksum,
    write_wfdb_record,
)

__all__ = [
    "INT16_NAN", "DataFormatError", "MatV4", "SignalSpec", "WfdbHeader", "build_header", "format_header",
    "parse_header", "read_dat16", "read_header", "read_matv4", "to_digital", "to_physical", "wfdb_checksum",
    "write_challenge_record", "write_matv4", "write_wfdb_record",
]
