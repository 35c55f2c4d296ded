"""Draw the import graph of the package's modules (for docs/development.rst).

    python docs/import_graph.py sklearn_clip docs/_static/import_graph_after.png

Nodes are the package's modules; an arrow A -> B means A imports B. Estimator
modules are orange, shared modules blue. Needs networkx and matplotlib.
"""

import ast
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

import sklearn_clip  # noqa: E402

#: Modules defining the package's estimators (sklearn_clip.all_estimators).
ESTIMATORS = {
    cls.__module__.rsplit(".", 1)[1] for _, cls in sklearn_clip.all_estimators()
}
SKIPPED = {"__init__", "__main__", "_version", "_warnings", "_docstrings"}


def import_graph(package):
    graph = nx.DiGraph()
    modules = {p.stem for p in Path(package).glob("*.py")} - SKIPPED
    graph.add_nodes_from(modules)
    for module in modules:
        tree = ast.parse((Path(package) / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                target = node.module.split(".")[0]
                if target in modules:
                    graph.add_edge(module, target)
    return graph


def draw(graph, path, title):
    fig, ax = plt.subplots(figsize=(11, 7.5))
    layers = {}
    for node in nx.topological_sort(graph.reverse()):
        deps = list(graph.successors(node))
        layers[node] = 1 + max((layers[d] for d in deps), default=-1)
    for node, layer in layers.items():
        graph.nodes[node]["layer"] = layer
    position = nx.multipartite_layout(graph, subset_key="layer", align="horizontal")
    colours = ["#f4a261" if n in ESTIMATORS else "#8ecae6" for n in graph]
    crossing = [(a, b) for a, b in graph.edges if a in ESTIMATORS and b in ESTIMATORS]
    nx.draw_networkx_nodes(graph, position, node_color=colours, node_size=1800, ax=ax)
    nx.draw_networkx_labels(graph, position, font_size=7, ax=ax)
    nx.draw_networkx_edges(
        graph,
        position,
        edge_color="#999999",
        arrows=True,
        arrowsize=10,
        node_size=1800,
        ax=ax,
    )
    nx.draw_networkx_edges(
        graph,
        position,
        edgelist=crossing,
        edge_color="#d62828",
        width=2.2,
        arrows=True,
        arrowsize=14,
        node_size=1800,
        ax=ax,
    )
    ax.set_title(
        f"{title}: orange = estimator module, blue = shared module; "
        f"red = estimator imports estimator ({len(crossing)})",
        fontsize=9,
    )
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    package, out = sys.argv[1], sys.argv[2]
    title = sys.argv[3] if len(sys.argv) > 3 else Path(out).stem
    draw(import_graph(package), out, title)
