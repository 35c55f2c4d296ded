"""
Scaling out: embed on a Dask cluster, resume, search on the cluster
===================================================================

The same steps as on a real cluster, on a local Dask cluster of two
workers: embed a folder of photos into Parquet shards with
:func:`~sklearn_clip.distributed.embed_to_parquet`, lose half the shards and
resume, read the embeddings back in input order, then run a grid search
whose fits run on the cluster's workers.

It uses real photos of ants and bees (``shared/data/images`` of the
project) and the package's tiny random-weight CLIP (no weights can be
downloaded where the documentation is built), so the accuracies mean
nothing; the mechanics are those of a ViT-L-14 job on a GPU cluster.
"""

# %%
# A local cluster
# ---------------
# On a real cluster you would connect to its scheduler
# (``address="tcp://scheduler:8786"``). Here two single-threaded workers run
# as threads of this process (``processes=False``), so the example also runs
# as a plain script; with worker *processes*, keep the calls under
# ``if __name__ == "__main__":``, since each process imports the main script.
import os
import tempfile
import time
import warnings
from pathlib import Path

from dask.distributed import Client, LocalCluster

from sklearn_clip import TINY_MODEL, CLIPFeaturizer, load_image_folder
from sklearn_clip.distributed import EmbeddingStore, embed_to_parquet

warnings.filterwarnings("ignore", message="pretrained=None")

SHARED_DATA = Path(
    os.environ.get("SKLEARN_CLIP_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
if not SHARED_DATA.is_dir():
    raise SystemExit("This example needs the photos in ../shared/data/images.")

paths, labels = load_image_folder(SHARED_DATA / "images" / "hymenoptera", split="train")
cluster = LocalCluster(
    n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
)
client = Client(cluster)
print(f"{len(paths)} photos; {len(client.scheduler_info()['workers'])} workers")

# %%
# Embed into Parquet shards
# -------------------------
# Shards of 32 photos; each worker loads the model once and writes
# ``part-000000.parquet``, ``part-000001.parquet``, ... plus a
# ``_manifest.json`` describing the job.
featurizer = CLIPFeaturizer(TINY_MODEL, pretrained=None, device="cpu", batch_size=16)
output = Path(tempfile.mkdtemp()) / "embeddings"
on_the_cluster = dict(
    backend="dask", address=cluster.scheduler_address, shard_size=32, progress=False
)
job_start = time.time()
start = time.perf_counter()
store = embed_to_parquet(featurizer, paths, output, **on_the_cluster)
print(f"{store.n_shards} shards in {time.perf_counter() - start:.1f} s")
print(sorted(os.listdir(output))[:3], "...")


def written_at():
    """Seconds after the job's start at which each shard file was written."""
    return {
        int(name[5:11]): os.stat(output / name).st_mtime - job_start
        for name in sorted(os.listdir(output))
        if name.startswith("part-")
    }


first_run = written_at()

# %%
# Any Parquet reader can read a shard: one row per input, none dropped.
shard = store.read_shard(0).to_pandas()
shard["input"] = shard["input"].map(os.path.basename)
shard["content_sha256"] = shard["content_sha256"].str[:12] + "..."
print(shard.drop(columns="embedding").head(3).to_string())
print("embedding width:", len(shard["embedding"][0]))

# %%
# Lose half the shards, resume
# ----------------------------
# A killed job leaves only complete shards (each is written under a
# temporary name, then renamed). The same call again computes only what is
# missing.
lost = sorted(name for name in os.listdir(output) if name.startswith("part-"))[::2]
for name in lost:
    os.remove(output / name)
print("missing:", EmbeddingStore(output).missing_shards())
start = time.perf_counter()
store = embed_to_parquet(featurizer, paths, output, **on_the_cluster)
print(f"resumed {len(lost)} shards in {time.perf_counter() - start:.1f} s")

# %%
# When each shard file was written: the resume rewrote the lost shards only.
import matplotlib.pyplot as plt

after_resume = written_at()
resumed = [shard for shard in after_resume if after_resume[shard] != first_run[shard]]
kept = [shard for shard in after_resume if shard not in resumed]
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.scatter(
    list(first_run), list(first_run.values()), marker="o", label="first run", s=60
)
ax.scatter(
    resumed,
    [after_resume[s] for s in resumed],
    marker="s",
    color="C1",
    label="resumed (lost shards only)",
    s=60,
)
ax.scatter(
    kept,
    [after_resume[s] for s in kept],
    marker="x",
    color="k",
    s=30,
    label="kept from the first run",
)
ax.set_xlabel("shard")
ax.set_ylabel("written at (s after start)")
ax.set_xticks(sorted(after_resume))
ax.legend(loc="lower right", fontsize=8)
ax.set_title("Resuming recomputes only the missing shards")
fig.tight_layout()

# %%
# The store equals one local ``transform`` call, bit for bit (the shard size
# is a multiple of the batch size, so the batches are the same).
import numpy as np

X = store.to_numpy()
print(X.shape, np.array_equal(X, featurizer.fit_transform(paths)))

# %%
# Model search on the cluster
# ---------------------------
# No new API: joblib's Dask backend runs GridSearchCV's fits on the workers;
# ``scatter`` sends the data once. The result is that of ``n_jobs=1``.
import joblib
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

search = GridSearchCV(
    LogisticRegression(max_iter=1000), {"C": [0.1, 1.0, 10.0]}, cv=3, n_jobs=2
)
with joblib.parallel_config(backend="dask", scatter=[X, labels]):
    search.fit(X, labels)
reference = GridSearchCV(
    LogisticRegression(max_iter=1000), {"C": [0.1, 1.0, 10.0]}, cv=3
).fit(X, labels)
print("on the cluster:", search.best_params_, "in one process:", reference.best_params_)

client.close()
cluster.close()
