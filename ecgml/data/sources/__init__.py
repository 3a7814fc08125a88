"""The dataset readers, one module per database, and the registry that names them (:mod:`.registry`)."""

from ecgml.data.sources.registry import (
    DATASET_SOURCES,
    DatasetSource,
    Reader,
    ReadRequest,
    get_dataset_source,
    overlap_refusal,
    records_of_source,
    register_source,
    source_names,
)

__all__ = ["DATASET_SOURCES", "DatasetSource", "ReadRequest", "Reader", "get_dataset_source", "overlap_refusal",
           "records_of_source", "register_source",
           "source_names"]
