# A python-fu-eval batch script run inside gimp-console-3.0 by the tests in this folder.
# The test prepends a line "PARAMS = {...}". It loads the photo, optionally enlarges the canvas
# (so that the layer sits at an offset) and changes the precision, selects a feathered ellipse,
# runs one GANPaint procedure non-interactively, and writes what happened to PARAMS["out"]:
# result.json (status, message, layers), the source and new layers' pixels and the selection
# as raw files, and the flattened image as after.png.
import json
import os

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
fmt = "R'G'B'A u16" if P.get("precision") == "u16" else "R'G'B'A u8"
if P.get("ellipse"):
    x, y, w, h = P["ellipse"]
    img.select_ellipse(Gimp.ChannelOps.REPLACE, x, y, w, h)
    if P.get("feather"):
        Gimp.Selection.feather(img, P["feather"])
img.set_selected_layers([src])

proc = Gimp.get_pdb().lookup_procedure(P["procedure"])
cfg = proc.create_config()
cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
if P["procedure"] != "plug-in-ganpaint-status":
    cfg.set_property("image", img)
    cfg.set_core_object_array("drawables", [src])
for key, value in P.get("args", {}).items():
    cfg.set_property(key, value)
result = proc.run(cfg)
status = result.index(0)
values = [result.index(i) for i in range(1, result.length())]
info = {
    "status": status.value_nick,
    "values": [v if isinstance(v, (str, int, float)) else None for v in values],
}
if status != Gimp.PDBStatusType.SUCCESS and values and isinstance(values[0], str):
    info["message"] = values[0]


def dump(drawable, name):
    _, ox, oy = drawable.get_offsets()
    w, h = drawable.get_width(), drawable.get_height()
    data = drawable.get_buffer().get(
        Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE
    )
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes(data))
    return {"name": drawable.get_name(), "x": ox, "y": oy, "w": w, "h": h, "file": name}


info["format"] = fmt
info["image"] = {"w": img.get_width(), "h": img.get_height()}
info["layers"] = [dump(layer, f"layer{i}.raw") for i, layer in enumerate(img.get_layers())]
info["source_index"] = img.get_item_position(src)
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
with open(os.path.join(out, "selection.raw"), "wb") as f:
    f.write(bytes(sel))
info["undo_enabled"] = img.undo_is_enabled()
flat = img.duplicate()
flat.flatten()
Gimp.file_save(
    Gimp.RunMode.NONINTERACTIVE, flat, Gio.File.new_for_path(os.path.join(out, "after.png")), None
)
flat.delete()
with open(os.path.join(out, "result.json"), "w") as f:
    json.dump(info, f, indent=1)
print("GANPAINT-TEST-DONE", json.dumps(info))
