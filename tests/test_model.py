import torch

from cpbook.synthetic.model import InContextRegressor, ModelSize, interleave

SIZE = ModelSize(n_layer=2, n_embd=16, n_head=2)


def test_interleave_puts_x_then_y_tokens():
    xs = torch.arange(12.0).reshape(1, 3, 4)
    ys = torch.tensor([[100.0, 200.0, 300.0]])
    seq = interleave(xs, ys)
    assert seq.shape == (1, 6, 5)
    assert torch.equal(seq[0, 2], torch.tensor([4.0, 5.0, 6.0, 7.0, 0.0]))
    assert torch.equal(seq[0, 3], torch.tensor([0.0, 0.0, 0.0, 0.0, 200.0]))


def test_one_prediction_per_pair():
    model = InContextRegressor(d=4, n_points=7, size=SIZE)
    out = model(torch.randn(3, 7, 4), torch.randn(3, 7))
    assert out.shape == (3, 7)
    assert model(torch.randn(2, 3, 4), torch.randn(2, 3)).shape == (2, 3)   # shorter prompts work too


def test_prediction_i_never_sees_label_i_or_anything_after():
    torch.manual_seed(0)
    model = InContextRegressor(d=3, n_points=6, size=SIZE).eval()
    xs, ys = torch.randn(1, 6, 3), torch.randn(1, 6)
    base = model(xs, ys)
    ys2 = ys.clone()
    ys2[0, 3] += 10.0
    changed = model(xs, ys2)
    assert torch.allclose(base[0, :4], changed[0, :4])          # positions 0..3 cannot see y_3
    assert not torch.allclose(base[0, 4:], changed[0, 4:])


def test_too_long_prompt_is_a_clear_error():
    model = InContextRegressor(d=3, n_points=4, size=SIZE)
    try:
        model(torch.randn(1, 5, 3), torch.randn(1, 5))
    except ValueError as e:
        assert "at most 4" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_the_model_is_gpt2_given_the_same_weights():
    """The book's transformer computes GPT-2's function: with its weights copied into
    transformers' GPT2Model, outputs agree up to GPT-2's tanh approximation of the GELU."""
    from cpbook.synthetic.gpt2_reference import as_gpt2
    torch.manual_seed(0)
    model = InContextRegressor(d=3, n_points=6, size=ModelSize(n_layer=2, n_embd=16, n_head=4)).eval()
    with torch.no_grad():                      # larger weights than at init, so a mix-up would show
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    xs, ys = torch.randn(8, 6, 3), torch.randn(8, 6)
    ours = model(xs, ys)
    for attention in ("eager", "sdpa"):
        theirs = as_gpt2(model, attention)(xs, ys)
        assert (ours - theirs).abs().max() < 2e-3 * ours.abs().max(), attention
    assert (ours - model(xs, ys.flip(1))).abs().max() > 0.1       # and the comparison can fail


def test_flops_per_prompt_counts_every_linear_layer():
    model = InContextRegressor(d=3, n_points=4, size=ModelSize(n_layer=1, n_embd=8, n_head=2))
    T = 8
    linear = 4 * 8 + 8 * 24 + 8 * 8 + 8 * 32 + 32 * 8 + 8 * 1
    assert model.flops_per_prompt() == 2 * linear * T + 2 * 2 * (T * (T + 1) // 2) * 8


def test_all_queries_in_one_sequence_equal_one_prompt_per_query():
    """predict_queries reads each context once, with a mask, for every prefix and query; it must
    predict what separate prompts (context, then one query) predict."""
    from cpbook.synthetic.inference import predictions_by_copies, query_predictions
    torch.manual_seed(0)
    model = InContextRegressor(3, 7, ModelSize(2, 32, 4)).eval()
    xs, ys, queries = torch.randn(5, 7, 3), torch.randn(5, 7), torch.randn(5, 4, 3)
    with torch.no_grad():
        fast = query_predictions(model, xs, ys, queries, chunk=2)
        slow = predictions_by_copies(model, xs, ys, queries)
        assert fast.shape == (5, 6, 4)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
        # it can fail: a query that attended to one pair too many would predict otherwise
        shifted = predictions_by_copies(model, xs, ys.roll(1, dims=1), queries)
        assert (fast - shifted).abs().max() > 1e-2


def test_written_out_attention_is_the_fused_kernels_math():
    """The attention the model trains with (three tensor operations, faster at these sizes on a
    CPU) computes what PyTorch's scaled_dot_product_attention does, causal and masked alike."""
    torch.manual_seed(0)
    model = InContextRegressor(3, 7, ModelSize(2, 32, 4)).eval()
    xs, ys, queries = torch.randn(5, 7, 3), torch.randn(5, 7), torch.randn(5, 4, 3)
    with torch.no_grad():
        ours = model(xs, ys), model.predict_queries(xs, ys, queries)
        fused = model.use_sdpa()(xs, ys), model.predict_queries(xs, ys, queries)
        for a, b in zip(ours, fused):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert (ours[0] - model(xs, ys.roll(1, dims=1))).abs().max() > 1e-2   # and it can fail
