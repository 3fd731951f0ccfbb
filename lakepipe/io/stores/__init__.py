"""The lake's Zarr stores, one module per stored entity (paths: :mod:`lakepipe.io.layout`).

- :mod:`~lakepipe.io.stores.lesions`: sparse masks per participant/session/label, packed index,
  participants table;
- :mod:`~lakepipe.io.stores.connectomes`: (subject, time, voxel|region) series, streamed in;
- :mod:`~lakepipe.io.stores.atlases`: label volume and region table;
- :mod:`~lakepipe.io.stores.derivatives`: outputs of the methods (whole or incremental).
"""

from lakepipe.io.stores.atlases import Atlas, read_atlas, write_atlas
from lakepipe.io.stores.connectomes import (
    CHUNK_BYTES,
    STORAGE_CONVENTION,
    ConnectomeWriter,
    open_connectome,
    voxel_block,
)
from lakepipe.io.stores.derivatives import (
    IncrementalStore,
    open_derivative,
    strings_as_objects,
    voxel_volume,
    write_derivative,
)
from lakepipe.io.stores.grids import grid_attrs, grid_from_attrs
from lakepipe.io.stores.lesions import (
    LESION_INDEX_PREFIX,
    LesionIndex,
    merge_participants,
    read_lesion,
    read_lesion_index,
    read_participants,
    update_lesion_index,
    write_lesion,
)

__all__ = [
    "CHUNK_BYTES",
    "LESION_INDEX_PREFIX",
    "STORAGE_CONVENTION",
    "Atlas",
    "ConnectomeWriter",
    "IncrementalStore",
    "LesionIndex",
    "grid_attrs",
    "grid_from_attrs",
    "merge_participants",
    "open_connectome",
    "open_derivative",
    "read_atlas",
    "read_lesion",
    "read_lesion_index",
    "read_participants",
    "strings_as_objects",
    "update_lesion_index",
    "voxel_volume",
    "voxel_block",
    "write_atlas",
    "write_derivative",
    "write_lesion",
]
