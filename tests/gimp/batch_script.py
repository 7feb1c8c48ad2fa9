# A python-fu-eval batch script run inside gimp-console-3.0 by the tests in this folder.
# The test prepends a line "PARAMS = {...}". It loads the photo, optionally enlarges the canvas
# (so that the layer sits at an offset), changes the precision or makes it indexed, puts the
# layer in a group, selects a feathered ellipse (or everything), runs one GANPaint procedure
# non-interactively ("repeat" times, each on the layers then selected, as a user's next click
# would), and writes what happened to PARAMS["out"]: result.json (status, message, layers with
# their GANPaint parasite, the selected layers), the layers' pixels and the selection as raw
# files, and the flattened image as after.png. With "edits" (a list of {"ellipse" or "polygon",
# "subtract", "within", "feather", "args"}, see select()) it runs the procedure once per selection
# instead, with each edit's "args" over the common ones, and also writes each edit's selection
# (selection<i>.raw), the canvas after each edit (after<i>.png) and, at the end, the canvas
# with each layer beside the source hidden in turn (hidden<i>.png, i = the layer's position).
import json
import os
import time

from gi.repository import Gegl, Gimp, Gio

P = PARAMS  # noqa: F821 - prepended by the test
out = P["out"]
os.makedirs(out, exist_ok=True)
img = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(P["photo"]))
src = img.get_layers()[0]
if P.get("canvas_offset"):
    dx, dy = P["canvas_offset"]
    img.resize(img.get_width() + 2 * dx, img.get_height() + 2 * dy, dx, dy)
if P.get("precision") == "u16":
    img.convert_precision(Gimp.Precision.U16_NON_LINEAR)
if P.get("indexed"):
    img.convert_indexed(
        Gimp.ConvertDitherType.NONE, Gimp.ConvertPaletteType.GENERATE, 64, False, False, ""
    )
fmt = "R'G'B'A u16" if P.get("precision") == "u16" else "R'G'B'A u8"


def select(ellipse, feather, subtract=None, polygon=None, within=None):
    """An ellipse [x, y, w, h] (or a polygon [x0, y0, x1, y1, ...]), less the ellipse
    ``subtract``, cut to the rectangle ``within`` [x, y, w, h], feathered: as a user makes
    it with the selection tools."""
    if polygon:
        img.select_polygon(Gimp.ChannelOps.REPLACE, [float(v) for v in polygon])
    else:
        img.select_ellipse(Gimp.ChannelOps.REPLACE, *ellipse)
    if subtract:
        img.select_ellipse(Gimp.ChannelOps.SUBTRACT, *subtract)
    if within:
        img.select_rectangle(Gimp.ChannelOps.INTERSECT, *within)
    if feather:
        Gimp.Selection.feather(img, feather)


def save_selection(name):
    sel = (
        img.get_selection()
        .get_buffer()
        .get(
            Gegl.Rectangle.new(0, 0, img.get_width(), img.get_height()),
            1.0,
            "Y u8",
            Gegl.AbyssPolicy.NONE,
        )
    )
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes(sel))


def save_canvas(name):
    flat = img.duplicate()
    flat.flatten()
    path = Gio.File.new_for_path(os.path.join(out, name))
    Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, flat, path, None)
    flat.delete()


if P.get("ellipse"):
    select(P["ellipse"], P.get("feather"))
if P.get("select_all"):
    Gimp.Selection.all(img)
target = src
group = None
if P.get("group"):  # True: the group is the target; "source": the layer in it is
    group = Gimp.GroupLayer.new(img, "Group")
    img.insert_layer(group, None, 0)
    img.reorder_item(src, group, 0)
    target = src if P["group"] == "source" else group
stack = group.get_children if group else img.get_layers  # where results go
img.set_selected_layers([target])


def run_once(drawables, extra_args=None):
    proc = Gimp.get_pdb().lookup_procedure(P["procedure"])
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    if P["procedure"] != "plug-in-ganpaint-status":
        cfg.set_property("image", img)
        cfg.set_core_object_array("drawables", drawables)
    for key, value in {**P.get("args", {}), **(extra_args or {})}.items():
        cfg.set_property(key, value)
    t0 = time.perf_counter()
    result = proc.run(cfg)
    seconds = time.perf_counter() - t0  # the procedure's call until its result layer exists
    status = result.index(0)
    values = [result.index(i) for i in range(1, result.length())]
    run = {
        "status": status.value_nick,
        "seconds": round(seconds, 3),
        "values": [v if isinstance(v, (str, int, float)) else None for v in values],
    }
    if status != Gimp.PDBStatusType.SUCCESS and values and isinstance(values[0], str):
        run["message"] = values[0]
    return run


if P.get("edits"):
    runs = []
    for i, edit in enumerate(P["edits"]):
        shape = {k: edit.get(k) for k in ("subtract", "polygon", "within")}
        select(edit.get("ellipse"), edit.get("feather"), **shape)
        save_selection(f"selection{i}.raw")
        layers = list(img.get_selected_layers())  # as the menu would
        runs.append(run_once(layers, edit.get("args")))
        save_canvas(f"after{i}.png")
    for i, layer in enumerate(stack()):
        layer.set_visible(False)
        save_canvas(f"hidden{i}.png")
        layer.set_visible(True)
else:
    runs = [run_once([target])]
    for _ in range(P.get("repeat", 1) - 1):  # the next edit, on what is selected now
        runs.append(run_once(list(img.get_selected_layers())))
info = {**runs[-1], "runs": runs}


def dump(drawable, name):
    _, ox, oy = drawable.get_offsets()
    w, h = drawable.get_width(), drawable.get_height()
    data = drawable.get_buffer().get(
        Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE
    )
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes(data))
    parasite = drawable.get_parasite("ganpaint-settings")
    return {
        "name": drawable.get_name(),
        "x": ox,
        "y": oy,
        "w": w,
        "h": h,
        "file": name,
        "parasite": bytes(parasite.get_data()).decode() if parasite else None,
        "parasite_flags": parasite.get_flags() if parasite else None,
    }


info["format"] = fmt
info["image"] = {"w": img.get_width(), "h": img.get_height()}
info["layers"] = [
    dump(layer, f"layer{i}.raw") for i, layer in enumerate(stack()) if P.get("group") is not True
]
info["source_index"] = img.get_item_position(src)
info["selected"] = [layer.get_name() for layer in img.get_selected_layers()]
info["top_level"] = [layer.get_name() for layer in img.get_layers()]
if group:
    info["in_group"] = [layer.get_name() for layer in group.get_children()]
info["source_name"] = src.get_name()
save_selection("selection.raw")
info["undo_enabled"] = img.undo_is_enabled()
save_canvas("after.png")
with open(os.path.join(out, "result.json"), "w") as f:
    json.dump(info, f, indent=1)
print("GANPAINT-TEST-DONE", json.dumps(info))
