"""One measured run of lacuna's FNM (m-petersen/lacuna), for ``bench_lacuna.py``.

Run by the peer's own interpreter (a separate virtual environment with lacuna installed from its
source); it needs only lacuna and the standard library. Reads the spec given after ``--child``,
registers the HDF5 connectome folder, loads the lesion masks, runs ``batch_process`` with
lacuna's vectorised strategy (its recommended way for many lesions) and prints ``RESULT <json>``.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    spec = json.loads(sys.argv[sys.argv.index("--child") + 1])
    t0 = time.perf_counter()
    import numpy as np
    from lacuna import SubjectData
    from lacuna.analysis import FunctionalNetworkMapping
    from lacuna.assets.connectomes import register_functional_connectome
    from lacuna.batch import batch_process

    t_import = time.perf_counter() - t0
    register_functional_connectome(
        name="bench",
        space=spec["space"],
        resolution=2.0,
        data_path=spec["connectome"],
        n_subjects=spec["subjects"],
    )
    masks = [
        SubjectData.from_nifti(
            p, space=spec["space"], resolution=2.0, metadata={"subject_id": f"sub-{k:04d}"}
        )
        for k, p in enumerate(spec["masks"])
    ]
    analysis = FunctionalNetworkMapping(connectome_name="bench", method="boes", verbose=False)
    t1 = time.perf_counter()
    results = batch_process(masks, analysis, show_progress=False, strategy="vectorized")
    t_run = time.perf_counter() - t1
    assert len(results) == len(masks), (len(results), len(masks))
    maps = results[0].results["FunctionalNetworkMapping"]
    out = {"import_s": t_import, "run_s": t_run, "wall_s": time.perf_counter() - t0, "maps": sorted(maps)}
    if spec.get("save_zmap"):
        np.save(spec["save_zmap"], np.asarray(maps["zmap"].data.dataobj, np.float32))
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
