"""Draw the import graph of the package's rooms (for docs/development.rst).

    python docs/import_graph.py sklearn_clip docs/_static/import_graph_after.png

Nodes are the package's rooms (a module, or the ``distributed``
subpackage), coloured by their layer in ``sklearn_clip._layers``; an arrow
A -> B means A imports B, red where the layers forbid it. Needs networkx
and matplotlib.
"""

import ast
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

from sklearn_clip._layers import LAYERS, MAY_IMPORT, layer_of  # noqa: E402

COLOURS = {
    "shared": "#8ecae6",
    "estimators": "#f4a261",
    "composite": "#90be6d",
    "entry points": "#cdb4db",
}
SKIPPED = {"__init__", "__main__", "_version", "_warnings", "_docstrings", "_layers"}


def room_of(path, package):
    parts = path.relative_to(package).with_suffix("").parts
    return parts[0] if len(parts) > 1 else parts[0]


def import_graph(package):
    package = Path(package)
    graph = nx.DiGraph()
    for path in package.rglob("*.py"):
        room = room_of(path, package)
        if room in SKIPPED:
            continue
        graph.add_node(room)
        inside = path.parent != package  # a module of the subpackage
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                if inside and node.level == 1:
                    continue  # within the subpackage
                target = node.module.split(".")[0]
                if target not in SKIPPED and target != room:
                    graph.add_edge(room, target)
    return graph


def draw(graph, path, title):
    fig, ax = plt.subplots(figsize=(12, 8))
    layers = {}
    for node in nx.topological_sort(graph.reverse()):
        deps = list(graph.successors(node))
        layers[node] = 1 + max((layers[d] for d in deps), default=-1)
    for node, layer in layers.items():
        graph.nodes[node]["layer"] = layer
    position = nx.multipartite_layout(graph, subset_key="layer", align="horizontal")
    colours = [COLOURS[layer_of(n)] for n in graph]
    forbidden = [
        (a, b) for a, b in graph.edges if layer_of(b) not in MAY_IMPORT[layer_of(a)]
    ]
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
        edgelist=forbidden,
        edge_color="#d62828",
        width=2.2,
        arrows=True,
        arrowsize=14,
        node_size=1800,
        ax=ax,
    )
    legend = ", ".join(
        f"{c} = {layer}"
        for layer, c in zip(LAYERS, ("blue", "orange", "green", "purple"))
    )
    ax.set_title(
        f"{title}: {legend}; red = an import the layers forbid ({len(forbidden)})",
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
