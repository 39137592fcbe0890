"""Graph mechanics of pruned_mas: starting topologies, DAG realisation, layers, pruning, the policy."""

import numpy as np
import pytest
import torch

from mascompare.methods.agent_graph import (
    TOPOLOGIES, EdgePolicy, Graph, break_cycles, cut_count, find_cycle, fixed_graph, initial_masks, keep_count,
    layers, prune, question_rng, random_edge,
)

O = np.ones((4, 4), dtype=int)
OFF = O - np.eye(4, dtype=int)
Z = np.zeros((4, 4), dtype=int)


def m(edges, n=4):
    mask = np.zeros((n, n), dtype=int)
    for i, j in edges:
        mask[i, j] = 1
    return mask


@pytest.mark.parametrize("topology, spatial, temporal", [
    ("full", OFF, O),
    ("chain", m([(0, 1), (1, 2), (2, 3)]), m([(3, 0)])),
    ("star", m([(0, 1), (0, 2), (0, 3)]), O),
    ("layered", m([(0, 2), (0, 3), (1, 2), (1, 3)]), O),
    ("debate", Z, O),
])
def test_topology_masks(topology, spatial, temporal):
    s, t = initial_masks(topology, 4)
    np.testing.assert_array_equal(s, spatial)
    np.testing.assert_array_equal(t, temporal)


def test_random_topology_is_seeded_and_has_no_spatial_self_edges():
    a, b, c = initial_masks("random", 6, seed=1), initial_masks("random", 6, seed=1), initial_masks("random", 6, seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not (np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]))
    assert np.trace(a[0]) == 0 and 0 < a[0].sum() < 30


@pytest.mark.parametrize("seed", range(5))
def test_the_first_draw_does_not_replay_the_random_topology_of_the_same_seed(seed):
    """One seed feeds both the random topology and the edge sampler; at probability 1/2 a shared
    random stream would make the first sampled graph the starting graph itself."""
    spatial, temporal = initial_masks("random", 6, seed=seed)
    (graph,) = EdgePolicy(spatial, temporal, True, lr=0.1, lowrank_weight=0, anchor_weight=0, delta=0,
                          baseline_momentum=0.9, seed=seed).sample().graphs
    assert not np.array_equal(graph.temporal, temporal)  # temporal draws are kept as drawn (no cycle breaking)


def test_every_topology_builds_for_one_to_six_agents():
    for topology in TOPOLOGIES:
        for n in range(1, 7):
            s, t = initial_masks(topology, n, seed=3)
            assert s.shape == t.shape == (n, n) and np.trace(s) == 0


def test_find_cycle_returns_a_real_cycle():
    adj = m([(0, 1), (1, 2), (2, 0), (2, 3)])
    cycle = find_cycle(adj)
    assert sorted(cycle) == [(0, 1), (1, 2), (2, 0)]
    for (_, b), (c, _) in zip(cycle, cycle[1:] + cycle[:1]):
        assert b == c  # consecutive edges chain up and close
    assert find_cycle(m([(0, 1), (1, 2), (0, 2)])) is None


def test_sampled_graphs_are_dags_and_layers_respect_every_edge():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 7):
        for _ in range(200):
            adj = (rng.random((n, n)) < rng.random()).astype(int)
            np.fill_diagonal(adj, 0)
            dag, removed = break_cycles(adj, random_edge(rng))
            assert find_cycle(dag) is None
            assert all(adj[e] == 1 and dag[e] == 0 for e in removed)
            assert ((adj - dag) >= 0).all() and (adj - dag).sum() == len(removed)
            depth = {a: k for k, layer in enumerate(layers(dag)) for a in layer}
            assert sorted(depth) == list(range(n))
            assert all(depth[i] < depth[j] for i, j in zip(*np.nonzero(dag)))


def test_layers_refuse_a_cycle():
    with pytest.raises(ValueError):
        layers(m([(0, 1), (1, 0)]))


def test_cycle_breaking_with_a_seed_repeats():
    adj = OFF.copy()
    a = break_cycles(adj, random_edge(np.random.default_rng(5)))
    b = break_cycles(adj, random_edge(np.random.default_rng(5)))
    np.testing.assert_array_equal(a[0], b[0])


def test_fixed_graph_of_an_unlearned_complete_graph_is_the_complete_dag_in_agent_order():
    scores = np.zeros((4, 4))
    graph, removed = fixed_graph({"spatial": OFF.copy(), "temporal": O.copy()}, {"spatial": scores, "temporal": scores})
    np.testing.assert_array_equal(graph.spatial, np.triu(O, 1))
    assert graph.layers == [[0], [1], [2], [3]] and len(removed) == 6


def test_fixed_graph_breaks_a_cycle_at_its_weakest_edge():
    scores = np.full((3, 3), np.nan)
    spatial = m([(0, 1), (1, 2), (2, 0)], 3)
    scores[0, 1], scores[1, 2], scores[2, 0] = 1.0, -2.0, 0.5
    graph, removed = fixed_graph({"spatial": spatial, "temporal": np.zeros((3, 3), int)},
                                 {"spatial": scores, "temporal": scores})
    assert removed == [(1, 2)] and graph.layers == [[2], [0], [1]]


@pytest.mark.parametrize("edges, rate, kept", [(12, 0.5, 6), (16, 0.5, 8), (12, 0.25, 9), (20, 0.25, 15),
                                               (3, 0.5, 2), (1, 0.5, 1), (12, 0.0, 12), (5, 0.9, 1), (10, 0.7, 3)])
def test_keep_count(edges, rate, kept):
    assert keep_count(edges, rate) == kept


def test_pruning_keeps_exactly_the_top_edges_of_the_mask():
    rng = np.random.default_rng(1)
    for rate in (0.0, 0.25, 0.5, 0.75):
        scores = rng.normal(size=(5, 5))
        mask = (rng.random((5, 5)) < 0.6).astype(int)
        kept = prune(mask, scores, rate)
        assert kept.sum() == keep_count(mask.sum(), rate)
        assert (kept <= mask).all()
        if 0 < kept.sum() < mask.sum():
            assert scores[kept == 1].min() > scores[(mask == 1) & (kept == 0)].max()


def test_pruning_ties_go_to_the_earlier_edge():
    kept = prune(OFF, np.zeros((4, 4)), 0.5)
    np.testing.assert_array_equal(kept, m([(0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]))


# The authors' count: round(p x E) half to even (torch.round), at least one edge; ours keeps (1 - p) x E half up.
@pytest.mark.parametrize("edges, rate, cut, kept_ours", [
    (12, 0.25, 3, 9), (12, 0.5, 6, 6), (12, 0.125, 2, 11), (10, 0.25, 2, 8), (14, 0.25, 4, 11), (6, 0.25, 2, 5),
    (5, 0.5, 2, 3), (2, 0.1, 1, 2), (1, 0.5, 1, 1), (12, 0.0, 0, 12), (9, 0.25, 2, 7),
])
def test_cut_count_rounds_half_to_even_with_at_least_one_edge(edges, rate, cut, kept_ours):
    assert cut_count(edges, rate) == cut
    assert keep_count(edges, rate) == kept_ours


def test_cut_half_even_cuts_the_lowest_and_on_a_tie_the_earlier_edge():
    cut = OFF - prune(OFF, np.zeros((4, 4)), 0.25, "cut_half_even")
    np.testing.assert_array_equal(cut, m([(0, 1), (0, 2), (0, 3)]))  # ours would cut (3, 0), (3, 1), (3, 2)
    np.testing.assert_array_equal(OFF - prune(OFF, np.zeros((4, 4)), 0.25), m([(3, 0), (3, 1), (3, 2)]))
    scores = np.arange(16, dtype=float).reshape(4, 4)
    scores[3, 3] = -100  # no edge there: never counted
    kept = prune(OFF, scores, 0.125, "cut_half_even")  # 12 edges: cut 2, the lowest scores
    np.testing.assert_array_equal(OFF - kept, m([(0, 1), (0, 2)]))


def test_a_policy_without_baseline_is_plain_reinforce():
    """baseline_momentum=None: advantage = utility. With a moving average the first batch is its own
    baseline, so a batch of equal utilities moves nothing; without one, it raises the edge drawn."""
    moved = {}
    for momentum in (0.9, None):
        p = policy(spatial=m([(0, 1)], 2), temporal=np.zeros((2, 2), int), learn_temporal=False,
                   baseline_momentum=momentum)
        drawn = [torch.nn.functional.logsigmoid(p.logits["spatial"][0, 1]) for _ in range(2)]  # the edge drawn twice
        step = p.update(drawn, [1.0, 1.0])
        assert step["baseline"] == (0.0 if momentum is None else 1.0)
        moved[momentum] = p.scores("spatial")[0, 1]
    assert moved[0.9] == 0 and moved[None] > 0.05


def test_a_question_graph_seed_depends_on_the_run_seed_the_method_seed_the_sample_and_the_repeat():
    seed, rng = question_rng(42, 0, "arith-0001", 0)
    assert seed == question_rng(42, 0, "arith-0001", 0)[0] and 0 <= seed < 2**63
    assert rng.random() == np.random.default_rng(seed).random()
    others = {question_rng(*parts)[0] for parts in [(43, 0, "arith-0001", 0), (42, 1, "arith-0001", 0),
                                                     (42, 0, "arith-0002", 0), (42, 0, "arith-0001", 1)]}
    assert len(others) == 4 and seed not in others


def test_iterative_pruning_draws_only_the_edges_still_alive():
    p = policy()
    p.logits["spatial"].data[0, 1] = -5.0  # the weakest spatial edge
    p.prune_alive(0.25, "cut_half_even")
    assert p.alive["spatial"].sum() == 9 and p.alive["spatial"][0, 1] == 0 and p.alive["temporal"].sum() == 12
    draw = p.sample()
    assert draw.terms == 9 + 12 and not (draw.graphs[0].spatial > p.alive["spatial"]).any()
    np.testing.assert_array_equal(p.masks["spatial"], OFF)  # the starting edges stay as they were


def policy(spatial=OFF, temporal=O, learn_temporal=True, **kw):
    args = dict(lr=0.1, lowrank_weight=0.0, anchor_weight=0.0, delta=0.1, baseline_momentum=0.9, seed=0) | kw
    return EdgePolicy(spatial, temporal, learn_temporal, **args)


def test_sampled_log_probability_is_the_bernoulli_log_likelihood_of_the_draw():
    p = policy(spatial=m([(0, 1), (1, 2)], 3), temporal=m([(0, 0)], 3))
    draw = p.sample()
    (graph,), logp = draw.graphs, draw.logp
    assert isinstance(graph, Graph) and draw.terms == 3
    assert float(logp.detach()) == pytest.approx(3 * np.log(0.5))  # 3 learnable edges at probability 1/2
    assert (graph.spatial <= m([(0, 1), (1, 2)], 3)).all() and (graph.temporal <= m([(0, 0)], 3)).all()


def test_unlearned_temporal_mask_is_taken_as_it_is_and_adds_nothing():
    p = policy(learn_temporal=False)
    for _ in range(5):
        draw = p.sample()
        (graph,), logp = draw.graphs, draw.logp
        np.testing.assert_array_equal(graph.temporal, O)
    assert float(logp.detach()) == pytest.approx(12 * np.log(0.5))


def test_reinforce_raises_the_edges_of_good_graphs():
    p = policy(spatial=m([(0, 1), (1, 2)], 3), temporal=np.zeros((3, 3), int), learn_temporal=False)
    for _ in range(30):
        draws = [p.sample() for _ in range(8)]
        p.update([d.logp for d in draws], [float(d.graphs[0].spatial[0, 1]) for d in draws])  # utility: edge 0->1 drawn
    scores = p.scores("spatial")
    assert scores[0, 1] > 1.5 and abs(scores[1, 2]) < scores[0, 1] / 2


@pytest.mark.parametrize("lowrank, anchor, delta", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (2.0, 3.0, 0.0), (0.0, 1.0, 5.0)])
def test_low_rank_and_anchor_gradients_equal_their_hand_computed_values(lowrank, anchor, delta):
    """At the start every spatial edge of the complete 4-agent graph has probability 1/2: S = OFF / 2
    and dS/dlogit = 1/4 on the edges. OFF has eigenvalues 3, -1, -1, -1, so the gradient of its
    nuclear norm is its polar factor J/2 - I (1/2 on every edge); the anchor term ||OFF - S||_F =
    sqrt(12)/2 has gradient -(OFF - S) / ||OFF - S||_F = -1/sqrt(12) on every edge, and none while
    that distance stays within delta."""
    p = policy(learn_temporal=False, lowrank_weight=lowrank, anchor_weight=anchor, delta=delta)
    loss = p.regulariser()
    loss.backward()
    anchor_active = np.sqrt(12) / 2 > delta
    per_edge = 0.25 * (lowrank * 0.5 - (anchor / np.sqrt(12) if anchor_active else 0.0))
    expected = torch.as_tensor(per_edge * OFF, dtype=torch.float64)
    torch.testing.assert_close(p.logits["spatial"].grad, expected, rtol=1e-6, atol=1e-9)
    assert float(loss.detach()) == pytest.approx(lowrank * (3 + 1 + 1 + 1) / 2 + anchor * max(0, np.sqrt(12) / 2 - delta))
