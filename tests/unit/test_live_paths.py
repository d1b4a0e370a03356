"""Request paths fold to the route templates the system declares (surgesim/live/paths.py)."""

from surgesim.live.paths import PathFolder


def test_ids_fold_to_the_declared_template_and_unknown_paths_stay():
    f = PathFolder(["/orders", "/orders/{order_id}/ship", "/orders/{order_id}", "/orders/new", "/a/{x}/b/{y}"])
    assert f.fold("/orders") == "/orders"
    assert f.fold("/orders/o-17/ship") == "/orders/{order_id}/ship"
    assert f.fold("/orders/o-17") == "/orders/{order_id}"
    assert f.fold("/orders/new") == "/orders/new"  # a literal route wins over a placeholder
    assert f.fold("/orders/o-17?verbose=1") == "/orders/{order_id}"
    assert f.fold("/a/1/b/2") == "/a/{x}/b/{y}"
    assert f.fold("/orders/o-17/ship/now") == "/orders/o-17/ship/now"  # a placeholder is one segment
    assert f.fold("/pubsub") == "/pubsub"
    assert PathFolder([]).fold("/x/1") == "/x/1"
