"""A directed acyclic graph of node names, with OPEA's `DAG` API.

`graph` maps each node to the set of its downstream nodes, in insertion order (an `OrderedDict`,
as OPEA code and tests compare against). Unlike OPEA, every method that returns several nodes
returns them in a defined order: the order in which the nodes were added.

`RuntimeGraph` is the graph of one request: it shares its orchestrator's graph until a hook or a
`downstream_black_list` answer changes it, and only then copies it (copy-on-write).
"""

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping

from megaservice.exceptions import ConfigurationError

__all__ = ["DAG", "Graph", "RuntimeGraph"]

Graph = OrderedDict[str, set[str]]


class DAG:
    """A DAG of node names; edges point downstream (from producer to consumer)."""

    def __init__(self) -> None:
        self.graph: Graph = OrderedDict()

    def reset_graph(self) -> None:
        """Remove every node and edge."""
        self.graph = OrderedDict()

    def size(self) -> int:
        """Return the number of nodes."""
        return len(self.graph)

    def add_node(self, node_name: str, graph: Graph | None = None) -> None:
        """Add a node; `KeyError` if it exists already."""
        graph = self.graph if graph is None else graph
        if node_name in graph:
            raise KeyError(f"node {node_name} already exists")
        graph[node_name] = set()

    def add_node_if_not_exists(self, node_name: str, graph: Graph | None = None) -> None:
        """Add a node unless it exists already."""
        graph = self.graph if graph is None else graph
        if node_name not in graph:
            graph[node_name] = set()

    def delete_node(self, node_name: str, graph: Graph | None = None) -> None:
        """Remove a node and every edge touching it; `KeyError` if it does not exist."""
        graph = self.graph if graph is None else graph
        if node_name not in graph:
            raise KeyError(f"node {node_name} does not exist")
        del graph[node_name]
        for edges in graph.values():
            edges.discard(node_name)

    def delete_node_if_exists(self, node_name: str, graph: Graph | None = None) -> None:
        """Remove a node and its edges if it exists."""
        graph = self.graph if graph is None else graph
        if node_name in graph:
            self.delete_node(node_name, graph)

    def add_edge(self, ind_node: str, dep_node: str, graph: Graph | None = None) -> None:
        """Add the edge `ind_node -> dep_node`.

        Raises:
            KeyError: either node does not exist.
            ConfigurationError: the edge would close a cycle.
        """
        graph = self.graph if graph is None else graph
        if ind_node not in graph or dep_node not in graph:
            raise KeyError(f"one or more nodes do not exist in graph: {ind_node!r}, {dep_node!r}")
        if ind_node == dep_node or ind_node in self._reachable(dep_node, graph):
            raise ConfigurationError(f"edge {ind_node} -> {dep_node} would create a cycle")
        graph[ind_node].add(dep_node)

    def delete_edge(self, ind_node: str, dep_node: str, graph: Graph | None = None) -> None:
        """Remove the edge `ind_node -> dep_node`; `KeyError` if there is none."""
        graph = self.graph if graph is None else graph
        if dep_node not in graph.get(ind_node, ()):
            raise KeyError(f"this edge does not exist in graph: {ind_node} -> {dep_node}")
        graph[ind_node].remove(dep_node)

    def downstream(self, node: str, graph: Graph | None = None) -> list[str]:
        """Return the direct downstream nodes of `node`, in node insertion order."""
        graph = self.graph if graph is None else graph
        if node not in graph:
            raise KeyError(f"node {node} is not in graph")
        children = graph[node]
        if len(children) < 2:
            return list(children)
        return [n for n in graph if n in children]

    def predecessors(self, node: str, graph: Graph | None = None) -> list[str]:
        """Return the direct upstream nodes of `node`, in node insertion order."""
        graph = self.graph if graph is None else graph
        return [key for key, edges in graph.items() if node in edges]

    def all_downstreams(self, node: str, graph: Graph | None = None) -> list[str]:
        """Return every node reachable from `node`, in topological order."""
        graph = self.graph if graph is None else graph
        reachable = self._reachable(node, graph)
        return [n for n in self.topological_sort(graph) if n in reachable]

    def all_leaves(self, graph: Graph | None = None) -> list[str]:
        """Return the nodes with no downstream, in insertion order."""
        graph = self.graph if graph is None else graph
        return [key for key, edges in graph.items() if not edges]

    def ind_nodes(self, graph: Graph | None = None) -> list[str]:
        """Return the nodes with no upstream (the roots), in insertion order."""
        graph = self.graph if graph is None else graph
        dependent = {n for edges in graph.values() for n in edges}
        return [n for n in graph if n not in dependent]

    def from_dict(self, graph_dict: Mapping[str, Iterable[str]]) -> None:
        """Replace the graph with `{node: [downstream, ...]}`; raises like `add_edge` on a bad edge."""
        self.reset_graph()
        for node in graph_dict:
            self.add_node(node)
        for ind_node, dep_nodes in graph_dict.items():
            for dep_node in dep_nodes:
                self.add_edge(ind_node, dep_node)

    def validate(self, graph: Graph | None = None) -> tuple[bool, str]:
        """Return `(True, "valid")`, or `(False, reason)` when the graph has no root or a cycle."""
        graph = self.graph if graph is None else graph
        if graph and not self.ind_nodes(graph):
            return False, "no independent nodes detected"
        try:
            self.topological_sort(graph)
        except ValueError:
            return False, "failed topological sort"
        return True, "valid"

    def topological_sort(self, graph: Graph | None = None) -> list[str]:
        """Return the nodes in an order where every node comes after its upstreams (`ValueError` on a cycle)."""
        graph = self.graph if graph is None else graph
        in_degree = dict.fromkeys(graph, 0)
        for edges in graph.values():
            for n in edges:
                in_degree[n] += 1
        ready = [n for n, degree in in_degree.items() if degree == 0]
        order: list[str] = []
        while ready:
            node = ready.pop()
            order.append(node)
            for child in self.downstream(node, graph):
                in_degree[child] -= 1
                if in_degree[child] == 0:
                    ready.append(child)
        if len(order) != len(graph):
            raise ValueError("graph is not acyclic")
        return order

    @staticmethod
    def _reachable(node: str, graph: Graph) -> set[str]:
        seen: set[str] = set()
        queue = deque(graph.get(node, ()))
        while queue:
            n = queue.popleft()
            if n not in seen:
                seen.add(n)
                queue.extend(graph.get(n, ()))
        return seen


class RuntimeGraph(DAG):
    """The graph of one request: shares the orchestrator's graph until something changes it.

    Reading `graph` (or calling a method that mutates it) gives the request its own copy first,
    so hooks that rewire the pipeline (ChatQnA removes the rerank node when nothing was retrieved)
    never touch the orchestrator's graph or another request's.
    """

    def __init__(self, base: Graph | None = None) -> None:
        self._base: Graph = base if base is not None else OrderedDict()
        self._own: Graph | None = None

    @property
    def graph(self) -> Graph:
        """This request's graph (copied from the orchestrator's on first access)."""
        if self._own is None:
            self._own = OrderedDict((node, set(edges)) for node, edges in self._base.items())
        return self._own

    @graph.setter
    def graph(self, value: Graph) -> None:
        self._own = value

    @property
    def changed(self) -> bool:
        """Whether this request has its own copy (it may have changed the topology)."""
        return self._own is not None

    def _view(self) -> Graph:
        return self._base if self._own is None else self._own

    def downstream(self, node: str, graph: Graph | None = None) -> list[str]:
        """Return the direct downstream nodes of `node`, in insertion order."""
        return super().downstream(node, self._view() if graph is None else graph)

    def predecessors(self, node: str, graph: Graph | None = None) -> list[str]:
        """Return the direct upstream nodes of `node`, in insertion order."""
        return super().predecessors(node, self._view() if graph is None else graph)

    def all_leaves(self, graph: Graph | None = None) -> list[str]:
        """Return the nodes with no downstream, in insertion order."""
        return super().all_leaves(self._view() if graph is None else graph)

    def ind_nodes(self, graph: Graph | None = None) -> list[str]:
        """Return the roots, in insertion order."""
        return super().ind_nodes(self._view() if graph is None else graph)

    def size(self) -> int:
        """Return the number of nodes."""
        return len(self._view())
