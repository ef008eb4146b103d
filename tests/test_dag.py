from collections import OrderedDict

import pytest

from megaservice import DAG, ConfigurationError


def diamond() -> DAG:
    dag = DAG()
    dag.from_dict({"a": ["b", "d"], "b": ["c"], "c": ["d"], "d": []})
    return dag


def test_graph_is_an_ordered_dict_of_sets_as_opea_exposes_it():
    assert diamond().graph == OrderedDict([("a", {"d", "b"}), ("b", {"c"}), ("c", {"d"}), ("d", set())])


def test_topological_sort_puts_every_node_after_its_upstreams():
    assert diamond().topological_sort() == ["a", "b", "c", "d"]


@pytest.mark.parametrize("order", [["b", "c", "d"], ["d", "c", "b"], ["c", "d", "b"]])
def test_downstream_follows_node_insertion_order_not_set_order(order):
    dag = DAG()
    dag.add_node("root")
    for name in order:
        dag.add_node(name)
    for name in reversed(order):
        dag.add_edge("root", name)
    assert dag.downstream("root") == order


def test_queries_on_a_diamond():
    dag = diamond()
    assert dag.predecessors("d") == ["a", "c"]
    assert dag.ind_nodes() == ["a"]
    assert dag.all_leaves() == ["d"]
    assert dag.all_downstreams("a") == ["b", "c", "d"]
    assert dag.size() == 4


def test_an_edge_closing_a_cycle_is_refused_and_not_added():
    dag = diamond()
    with pytest.raises(ConfigurationError, match="cycle"):
        dag.add_edge("d", "a")
    assert "a" not in dag.graph["d"]
    assert dag.validate() == (True, "valid")


def test_edges_need_existing_nodes():
    with pytest.raises(KeyError):
        diamond().add_edge("a", "nope")


def test_deleting_a_node_removes_its_incoming_edges():
    dag = diamond()
    dag.delete_edge("a", "b")
    dag.delete_node("c")
    assert dag.graph == OrderedDict([("a", {"d"}), ("b", set()), ("d", set())])
