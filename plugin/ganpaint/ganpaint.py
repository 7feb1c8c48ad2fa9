#!/usr/bin/env python3
#   GANPaint for GIMP: semantic photo editing with a generative image prior.
#
#   Filters › Generative › GANPaint › Add Concept…, Remove Concept…, Learn Concept from
#   Selection…, Reconstruct (test the fit)…, Server Status….
#
#   The heavy lifting happens in a local server (`ganpaint serve`); this plug-in sends it the
#   selected part of the active layer as the user sees it (plus some context) and puts the
#   answer in a new layer above the earlier results, in one undo group. It imports only the
#   standard library, gi, and ganpaint_client (zmq + msgpack), which the installer puts next to
#   this file.
#
#   Result layers stack. An edit's layer is opaque exactly where the selection is above 0 (its
#   alpha there is the source's) and transparent elsewhere, and its colour is the server's
#   result. The server already fades the edit by the selection's softness (only pixels with
#   mask > 0 change, faded in from the selection's edge), so this layer over what the edit read
#   shows exactly what the server computed, in every pixel: no seam where its rectangle ends,
#   nothing hidden outside the selection. A layer whose alpha were the selection's value
#   would fade the change twice (alpha × the server's fade); dividing the fade back out,
#   colour = (result − (1 − a)·below)/a, is exact only where nothing needs clamping and the
#   blend is in perceptual values, and GIMP's Normal mode blends in linear light (figures in
#   the plug-in's README, scripts/measure_layer_alpha.py). An edit reads the source layer with the
#   visible add/remove results of that source laid over it (what the user sees of the
#   stack) and goes above the topmost of them, so a later edit never hides an earlier one
#   and hiding a layer takes exactly its pixels away.

import os
import sys
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Gtk", "3.0")
from gi.repository import Gegl, Gimp, GimpUi, GLib, GObject, Gtk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ganpaint_support as gs  # noqa: E402

PLUG_IN_BINARY = "ganpaint"
MENU_PATH = "<Image>/Filters/Generative/GANPaint"
PROC_ADD = "plug-in-ganpaint-add"
PROC_REMOVE = "plug-in-ganpaint-remove"
PROC_LEARN = "plug-in-ganpaint-learn"
PROC_RECONSTRUCT = "plug-in-ganpaint-reconstruct"
PROC_STATUS = "plug-in-ganpaint-status"
NO_CONCEPT = "none"  # placeholder entry of the dialog's concept list
SERVER_DEFAULT = "server-default"  # placeholder entry of the dialog's model list
RW = GObject.ParamFlags.READWRITE
# GIMP 3.0.4 + PyGObject unref a Gimp.Choice given to add_choice_aux_argument() once too often
# when Python drops it (warning, then a crash while registering): keep every Choice alive.
_CHOICES = []


def new_choice(*entries):
    choice = Gimp.Choice.new()
    for i, (nick, label, help_text) in enumerate(entries):
        choice.add(nick, i, label, help_text)
    _CHOICES.append(choice)
    return choice


def quiet_final_broken_pipe():
    """Drop libgimp's "gimp_flush(): error: Broken pipe" warning, and only it. GIMP's core
    closes a plug-in's pipe as soon as it has read the procedure's result; libgimp then
    writes its last "quit" message into the closed pipe (seen after every call of this
    plug-in in GIMP 3.0.4 and 3.2.6). The result has been delivered by then: the warning
    only alarms users reading GIMP's log. Every other message passes."""

    def handler(domain, level, message, data):
        if "gimp_flush(): error: Broken pipe" not in (message or ""):
            GLib.log_default_handler(domain, level, message, data)

    GLib.log_set_handler("LibGimp", GLib.LogLevelFlags.LEVEL_WARNING, handler, None)


def fail(procedure, message, status=Gimp.PDBStatusType.EXECUTION_ERROR):
    return procedure.new_return_values(status, GLib.Error(message))


def cancelled(procedure):
    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())


def success(*values):
    head = [GObject.Value(Gimp.PDBStatusType, Gimp.PDBStatusType.SUCCESS)]
    return Gimp.ValueArray.new_from_values(head + [GObject.Value(t, v) for t, v in values])


# -- reading from and writing to GIMP ------------------------------------------------------------
# Precisions whose alpha-less RGB layers are stored as "R'G'B' u8" / "R'G'B' u16" (babl's
# names; the formats pixel_format asks for, less alpha).
NON_LINEAR = {Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U16_NON_LINEAR}


def pixel_format(image):
    """Ask babl for 8-bit RGBA for 8-bit images, 16-bit RGBA for anything deeper."""
    prec = image.get_precision()
    eight = {Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL}
    return ("R'G'B'A u8", "u8") if prec in eight else ("R'G'B'A u16", "u16")


def active_layer(image, drawables):
    # A selected layer mask stands for its layer.
    drawables = [
        Gimp.Layer.from_mask(d) if isinstance(d, Gimp.LayerMask) else d for d in (drawables or [])
    ]
    layers = [d for d in drawables if isinstance(d, Gimp.Layer)]
    if not layers and not drawables:  # scripts may leave "drawables" empty
        layers = [d for d in image.get_selected_layers() if isinstance(d, Gimp.Layer)]
    return layers[0] if len(layers) == 1 else None


def layer_rect(layer):
    _, x, y = layer.get_offsets()
    return gs.Rect(x, y, layer.get_width(), layer.get_height())


def read_pixels(image, layer, rect, fmt, dtype):
    """rect in image coordinates -> bytes in ``fmt`` (RGBA, 8 or 16 bit)."""
    _, ox, oy = layer.get_offsets()
    r = Gegl.Rectangle.new(rect.x - ox, rect.y - oy, rect.w, rect.h)
    buf = layer.get_buffer()
    opaque = image.get_precision() in NON_LINEAR and layer.is_rgb() and not layer.has_alpha()
    if opaque:  # a photo's usual layer: read it as it is, add alpha ourselves (no babl fish)
        rgb = bytes(buf.get(r, 1.0, fmt.replace("A ", " "), Gegl.AbyssPolicy.CLAMP))
        return gs.with_opaque_alpha(rgb, dtype)
    return bytes(buf.get(r, 1.0, fmt, Gegl.AbyssPolicy.CLAMP))


def earlier_results(image, source):
    """GANPaint's layers made from ``source``: those above it in its layer group whose
    settings name it, topmost first, as (layer, settings) pairs."""
    parent = source.get_parent()
    siblings = parent.get_children() if parent is not None else image.get_layers()
    out = []
    for layer in siblings[: image.get_item_position(source)]:
        parasite = layer.get_parasite(gs.PARASITE)
        settings = gs.read_settings(bytes(parasite.get_data())) if parasite else None
        if settings is not None and settings.get("source_layer") == source.get_name():
            out.append((layer, settings))
    return out


def read_visible(image, layer, rect, fmt, dtype):
    """The source layer over rect as the user sees it: its visible add/remove results laid
    over it (bottom to top, each with its opacity; GEGL's "over", the composite GIMP's Normal
    mode gives for the results' 0/opaque alpha). Without such results: the layer itself."""
    shown = [
        r
        for r, settings in earlier_results(image, layer)
        if settings.get("op") in gs.EDIT_OPS and r.get_visible()
    ]
    if not shown:
        return read_pixels(image, layer, rect, fmt, dtype)
    Gegl.init(None)
    graph = Gegl.Node()

    def placed(drawable):
        src = graph.create_child("gegl:buffer-source")
        src.set_property("buffer", drawable.get_buffer())
        _, x, y = drawable.get_offsets()
        moved = graph.create_child("gegl:translate")
        moved.set_property("x", float(x))
        moved.set_property("y", float(y))
        src.link(moved)
        return moved

    below = placed(layer)
    for result in reversed(shown):
        top = placed(result)
        if result.get_opacity() < 100.0:
            faded = graph.create_child("gegl:opacity")
            faded.set_property("value", result.get_opacity() / 100.0)
            top.link(faded)
            top = faded
        over = graph.create_child("gegl:over")
        below.link(over)
        top.connect_to("output", over, "aux")
        below = over
    out = Gegl.Buffer.new(fmt, rect.x, rect.y, rect.w, rect.h)
    sink = graph.create_child("gegl:write-buffer")
    sink.set_property("buffer", out)
    below.link(sink)
    sink.process()
    r = Gegl.Rectangle.new(rect.x, rect.y, rect.w, rect.h)
    return bytes(out.get(r, 1.0, fmt, Gegl.AbyssPolicy.NONE))


def read_mask(image, rect):
    """The selection, soft values included, over rect (image coordinates) as 'Y u8'."""
    r = Gegl.Rectangle.new(rect.x, rect.y, rect.w, rect.h)
    buf = image.get_selection().get_buffer()
    return bytes(buf.get(r, 1.0, "Y u8", Gegl.AbyssPolicy.NONE))


def selected_pixels(mask):
    return len(mask) - mask.count(0)


def selection_region(image, layer):
    """(box, notes, None) or (None, [], message). The box is the selection's bounding box on
    the layer, in image coordinates; notes say what the user should know (part of the
    selection off the layer, a very large selection)."""
    ok, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    if not ok or not non_empty:
        return None, [], gs.NO_SELECTION
    whole = gs.Rect(x1, y1, x2 - x1, y2 - y1)
    lr = layer_rect(layer)
    box = whole.intersect(lr)
    if box.empty():
        return None, [], gs.EMPTY_SELECTION
    on_layer = selected_pixels(read_mask(image, box))
    if on_layer == 0:
        return None, [], gs.EMPTY_SELECTION
    total = on_layer if box == whole else selected_pixels(read_mask(image, whole))
    refusal, warning = gs.selection_size_check(on_layer, lr.w * lr.h)
    if refusal:
        return None, [], refusal
    notes = [n for n in (gs.outside_note(total, on_layer, layer.get_name()), warning) if n]
    return box, notes, None


def keep_settings(layer, record):
    """Attach the settings that made ``layer`` (a persistent, undoable parasite)."""
    flags = Gimp.PARASITE_PERSISTENT | Gimp.PARASITE_UNDOABLE
    layer.attach_parasite(Gimp.Parasite.new(gs.PARASITE, flags, list(record)))


def add_result_layer(image, source, rect, raw, fmt, name, record=None, mask=None):
    """Put the server's answer in a new layer above ``source`` and the earlier results made
    from it (one undo group), transparent where ``mask`` (the selection over rect, 'Y u8') is
    0; without a mask (a reconstruction) the whole rect. ``source`` stays the active layer,
    so that a next edit works on the photo and its results, not on this cropped layer."""
    position = min(
        [image.get_item_position(source)]
        + [image.get_item_position(r) for r, _ in earlier_results(image, source)]
    )
    image.undo_group_start()
    try:
        if image.get_base_type() == Gimp.ImageBaseType.GRAY:
            kind = Gimp.ImageType.GRAYA_IMAGE
        else:
            kind = Gimp.ImageType.RGBA_IMAGE
        layer = Gimp.Layer.new(image, name, rect.w, rect.h, kind, 100.0, Gimp.LayerMode.NORMAL)
        image.insert_layer(layer, source.get_parent(), position)
        layer.set_offsets(rect.x, rect.y)
        data = raw.data if mask is None else gs.clear_unselected(raw.data, mask, raw.dtype)
        data = data if raw.dtype == "u8" else gs.u16_from_little_endian(data)
        buf = layer.get_buffer()
        buf.set(Gegl.Rectangle.new(0, 0, rect.w, rect.h), fmt, data)
        buf.flush()
        layer.update(0, 0, rect.w, rect.h)
        if record is not None:
            keep_settings(layer, record)
        image.set_selected_layers([source])
    finally:
        image.undo_group_end()
    Gimp.displays_flush()
    return layer


# -- talking to the server ----------------------------------------------------------------------
def connect(cfg, interactive):
    """Make sure a server answers (starting it when configured): (info, None) or (None, msg)."""
    started = []

    def waiting(seconds, text):
        if not started:
            started.append(True)
            Gimp.progress_init(text)
        Gimp.progress_set_text(text)
        Gimp.progress_pulse()

    try:
        info, message = gs.ensure_server(cfg, on_wait=waiting)
    finally:
        if started:
            Gimp.progress_end()
    return info, message


def fill_choice(procedure, arg_name, entries):
    """Add (nick, label) entries fetched from the server to a dialog-only choice argument."""
    choice = Gimp.param_spec_choice_get_choice(procedure.find_aux_argument(arg_name))
    next_id = 1000
    for nick, label in entries:
        if not choice.is_valid(nick):
            try:
                choice.add(nick, next_id, label, "")
                next_id += 1
            except (TypeError, ValueError):  # a name GIMP will not take as a nick
                pass
    return choice


def server_lists(cfg, procedure, config, op):
    """Fill the dialog's model list, and for ``op`` "add"/"remove" its concept list with the
    concepts that allow that operation, from the server."""
    client_mod = gs.import_client()
    client = client_mod.Client(cfg.address, timeout_s=cfg.timeout_s)
    try:
        models = client.models()
        fill_choice(
            procedure,
            "model-choice",
            [(m["id"], f"{m['id']} ({m.get('resolution', '?')} px)") for m in models],
        )
        model = config.get_property("model")
        if model and Gimp.param_spec_choice_get_choice(
            procedure.find_aux_argument("model-choice")
        ).is_valid(model):
            config.set_property("model-choice", model)
        if op in ("add", "remove"):
            concepts = gs.concepts_for(client.concepts(model or None), op)
            choice = fill_choice(
                procedure,
                "concept-choice",
                [(c["name"], f"{c['name']}  ({c.get('source', '')})") for c in concepts],
            )
            last = config.get_property("concept")
            if last and choice.is_valid(last):
                config.set_property("concept-choice", last)
            elif concepts and config.get_property("concept-choice") == NO_CONCEPT:
                first = concepts[0]["name"]
                if choice.is_valid(first):
                    config.set_property("concept-choice", first)
    finally:
        client.close()


def run_dialog(procedure, config, names, title):
    GimpUi.init(PLUG_IN_BINARY)
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title=title)
    dialog.fill(names)
    ok = dialog.run()
    dialog.destroy()
    return ok


def chosen_model(config, interactive):
    if interactive:
        config.set_property("model", dialog_model(config) or "")
    return config.get_property("model") or None


def ask_to_run(text):
    """A question before a long job: Run anyway (True) or Cancel (False)."""
    dialog = GimpUi.Dialog(title="GANPaint", role=PLUG_IN_BINARY)
    dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
    dialog.add_button("_Run anyway", Gtk.ResponseType.OK)
    label = Gtk.Label(label=text, wrap=True, max_width_chars=60, xalign=0)
    for side in ("start", "end", "top", "bottom"):
        getattr(label, f"set_margin_{side}")(12)
    dialog.get_content_area().add(label)
    label.show()
    answer = dialog.run()
    dialog.destroy()
    return answer == Gtk.ResponseType.OK


def run_on_server(cfg, title, call, ask=None):
    """Run one job with GIMP's progress bar; a watchdog cancels it if GIMP kills us.

    With ``ask``, call(client, progress, confirm=...) runs as gs.ask_first runs it: a
    question before the long part, asked with ask(text); a no returns (None, None)."""
    client_mod = gs.import_client()
    client = client_mod.Client(cfg.address, timeout_s=cfg.timeout_s)
    watchdog = gs.Watchdog(cfg.address)
    jobs = set()
    Gimp.progress_init(f"{title}…")

    def progress(p):
        job = p.get("job")
        if job and job not in jobs:
            jobs.add(job)
            watchdog.job(job)
        text, frac = gs.progress_text(title, p)
        Gimp.progress_set_text(text)
        if frac is not None:
            Gimp.progress_update(frac)
        else:
            Gimp.progress_pulse()

    try:
        if ask is None:
            return call(client, progress), None
        asked = gs.ask_first(
            lambda confirm: call(client, progress, confirm=confirm), ask, client_mod.ServerError
        )
        return asked, None
    except client_mod.ServerError as e:
        return None, gs.error_message(e, cfg)
    finally:
        watchdog.done()
        client.close()
        Gimp.progress_end()


def prepare(procedure, image, drawables, need_selection):
    """Layer, selection box (None: the whole layer), formats -- or an error message. Nothing
    is read yet: the crop around the box takes the server's context (``read_crop``)."""
    if image.get_base_type() == Gimp.ImageBaseType.INDEXED:
        return None, gs.INDEXED_IMAGE  # scripts reach here: the menu is off for indexed images
    layer = active_layer(image, drawables)
    if layer is None:
        return None, gs.NO_LAYER
    if layer.is_group():
        return None, gs.GROUP_LAYER.format(name=layer.get_name())
    fmt, dtype = pixel_format(image)
    box, notes = None, []
    if need_selection:
        box, notes, message = selection_region(image, layer)
        if message:
            return None, message
    elif Gimp.Selection.bounds(image)[1]:
        box = selection_region(image, layer)[0]
    job = {"layer": layer, "box": box, "fmt": fmt, "dtype": dtype, "notes": notes}
    return {**job, "selection": need_selection}, None


def read_crop(image, job, info, model=None):
    """The crop (the server's square around the selection for ``model``, else the whole
    layer), its pixels and (for an edit) its mask, into ``job``."""
    layer, box = job["layer"], job["box"]
    lr = layer_rect(layer)
    res = gs.model_resolution(info, model)
    rect = lr if box is None else gs.crop_region(box, lr, info["crop_context"], res)
    pixels = read_visible(image, layer, rect, job["fmt"], job["dtype"])
    if job["dtype"] == "u16":
        pixels = gs.u16_to_little_endian(pixels)
    mask = read_mask(image, rect) if job["selection"] else None
    job.update(rect=rect, pixels=pixels, mask=mask, crop_res=res, image=image, info=info)


def crop_for(job, model):
    """Read the crop again when the model chosen in the dialog needs a larger square than
    the one read before it (a smaller one is inside the crop already)."""
    if job["box"] is not None and gs.model_resolution(job["info"], model) > job["crop_res"]:
        read_crop(job["image"], job, job["info"], model)


def raw_images(job):
    client_mod = gs.import_client()
    r = job["rect"]
    image = client_mod.RawImage(job["pixels"], r.w, r.h, 4, job["dtype"])
    mask = None
    if job["mask"] is not None:
        mask = client_mod.RawImage(job["mask"], r.w, r.h, 1, "u8")
    return image, mask


# -- procedures ------------------------------------------------------------------------------------
def begin(procedure, run_mode, image, drawables, config, need_selection, fields, title, op=None):
    """What every edit-like procedure does first: client module, layer + selection, server,
    then (interactive) the dialog with the server's lists. Returns (cfg, job, failed), where
    failed is the procedure's return values when it must stop."""
    interactive = run_mode == Gimp.RunMode.INTERACTIVE
    cfg = gs.load_config()
    try:
        gs.import_client()
    except RuntimeError as e:
        return cfg, None, fail(procedure, str(e))
    job, message = prepare(procedure, image, drawables, need_selection=need_selection)
    for note in job["notes"] if job else []:
        Gimp.message(note)  # before the (possibly long) job, in the status bar/console
    if not message:
        info, message = connect(cfg, interactive)
    if message:
        return cfg, job, fail(procedure, message)
    read_crop(image, job, info, config.get_property("model") or None)
    if interactive:
        try:
            server_lists(cfg, procedure, config, op)
        except Exception as e:  # noqa: BLE001 - shown to the user
            return cfg, job, fail(procedure, gs.error_message(e, cfg))
        if op in ("add", "remove"):  # invert while the user chooses (docs/protocol.md §6.7a)
            src, mask = raw_images(job)
            job["ahead"] = gs.InvertAhead(
                gs.import_client(),
                cfg.address,
                cfg.timeout_s,
                src,
                mask,
                dialog_model(config),
                quality(config),  # the inversion's budget: the fast path's, or faithful's
            )
        if not run_dialog(procedure, config, fields, title):
            if "ahead" in job:  # its socket must close before the plug-in exits
                job["ahead"].cancel()
                job["ahead"].finish()
            return cfg, job, cancelled(procedure)
    return cfg, job, None


def dialog_model(config):
    """The model the dialog's list shows now (None: the server's default)."""
    model = config.get_property("model-choice")
    return None if model == SERVER_DEFAULT else model


def quality(config):
    """The server's G′ fit: the fast path (docs/performance.md) or the method as published."""
    return "fast" if config.get_property("fast") else "faithful"


def run_edit(procedure, run_mode, image, drawables, config, data):
    """Add Concept… / Remove Concept…: data is "add" or "remove"."""
    op = data
    interactive = run_mode == Gimp.RunMode.INTERACTIVE
    title = "GANPaint: add a concept" if op == "add" else "GANPaint: remove a concept"
    fields = ["concept-choice", "strength", "steps", "fast", "model-choice"]
    if op == "remove":
        fields.insert(2, "everywhere")
    cfg, job, failed = begin(
        procedure, run_mode, image, drawables, config, True, fields, title, op=op
    )
    if failed:
        return failed
    ahead = job.get("ahead")
    try:
        return edit_on_server(procedure, interactive, image, job, cfg, config, op)
    finally:
        if ahead is not None:  # over by now after an edit; else (refused early) not needed
            ahead.cancel()
            ahead.finish()


def edit_on_server(procedure, interactive, image, job, cfg, config, op):
    """The edit itself, once the dialog (if any) has been answered."""
    if interactive:
        concept = config.get_property("concept-choice")
        if concept == NO_CONCEPT:
            return fail(
                procedure,
                "GANPaint: pick a concept in the list (or learn one first "
                "with Learn Concept from Selection…).",
            )
        config.set_property("concept", concept)
    model = chosen_model(config, interactive)
    crop_for(job, model)
    ahead = job.get("ahead")
    if ahead is not None and ahead.model != model:
        ahead.cancel()  # another model was chosen: its inversion is of no use
    concept = (config.get_property("concept") or "").strip() or None
    try:
        units = gs.parse_units(config.get_property("units") or "")
    except ValueError as e:
        return fail(procedure, f"GANPaint: {e}", Gimp.PDBStatusType.CALLING_ERROR)
    if concept is None and units is None:
        return fail(
            procedure,
            f"GANPaint: name a concept (or units) to {op}.",
            Gimp.PDBStatusType.CALLING_ERROR,
        )
    strength = config.get_property("strength")
    steps = config.get_property("steps") or None
    everywhere = op == "remove" and bool(config.get_property("everywhere"))
    src, mask = raw_images(job)
    title = gs.layer_name(op, concept, units)
    name = gs.layer_name(op, concept, units, strength, quality(config))
    result, message = run_on_server(
        cfg,
        title,
        lambda c, progress, confirm=False: c.edit(
            src,
            mask,
            op=op,
            concept=concept,
            units=units,
            strength=strength,
            model=model,
            steps=steps,
            quality=quality(config),
            progress=progress,
            remove_all=everywhere,
            confirm_replaced=gs.CONFIRM_REPLACED if confirm else None,
        ),
        ask=ask_to_run if interactive else None,
    )
    if message:
        return fail(procedure, message)
    if result is None:  # the user said no to the question
        return cancelled(procedure)
    note = gs.edit_note(op, concept, result.get("metrics"))
    if note:
        Gimp.message(note)
    settings = {"op": op, "concept": concept, "units": units, "strength": strength}
    if everywhere:
        settings["everywhere"] = True
    return finish(image, job, result, name, config, model, steps, settings)


def finish(image, job, result, name, config, model, steps, settings):
    """The result as a new layer named ``name`` with its settings kept on it; the procedure's
    return values (the layer, the fit outside the edit in dB)."""
    psnr = float(result["psnr_keep"])
    r = job["rect"]
    record = gs.settings_record(
        **settings,
        quality=quality(config),
        steps=steps,
        model=result.get("model") or model,
        psnr_keep=round(psnr, 2),
        source_layer=job["layer"].get_name(),
        box=[r.x, r.y, r.w, r.h],
    )
    mask = job["mask"] if settings["op"] in gs.EDIT_OPS else None
    layer = add_result_layer(
        image, job["layer"], r, result["image"], job["fmt"], name, record, mask
    )
    return success((Gimp.Layer, layer), (GObject.TYPE_DOUBLE, psnr))


def run_reconstruct(procedure, run_mode, image, drawables, config, data):
    interactive = run_mode == Gimp.RunMode.INTERACTIVE
    title = "GANPaint: how well does the model fit this photo?"
    fields = ["steps", "fast", "model-choice"]
    cfg, job, failed = begin(procedure, run_mode, image, drawables, config, False, fields, title)
    if failed:
        return failed
    model = chosen_model(config, interactive)
    crop_for(job, model)
    steps = config.get_property("steps") or None
    src, _ = raw_images(job)
    result, message = run_on_server(
        cfg,
        "GANPaint: reconstruction",
        lambda c, progress: c.reconstruct(
            src, model=model, steps=steps, quality=quality(config), progress=progress
        ),
    )
    if message:
        return fail(procedure, message)
    psnr = float(result["psnr_keep"])
    name = gs.layer_name("reconstruct", quality=f"{quality(config)}, {psnr:.1f} dB")
    return finish(image, job, result, name, config, model, steps, {"op": "reconstruct"})


def run_learn(procedure, run_mode, image, drawables, config, data):
    interactive = run_mode == Gimp.RunMode.INTERACTIVE
    title = "GANPaint: learn a concept from the selection"
    fields = ["name", "model-choice"]
    cfg, job, failed = begin(procedure, run_mode, image, drawables, config, True, fields, title)
    if failed:
        return failed
    model = chosen_model(config, interactive)
    crop_for(job, model)
    name = (config.get_property("name") or "").strip()
    if not name:
        return fail(
            procedure, "GANPaint: give the new concept a name.", Gimp.PDBStatusType.CALLING_ERROR
        )
    src, mask = raw_images(job)
    result, message = run_on_server(
        cfg,
        f"GANPaint: learning '{name}'",
        lambda c, progress: c.learn_concept(src, mask, name=name, model=model, progress=progress),
    )
    if message:
        return fail(procedure, message)
    learned = str(result.get("name") or result.get("concept") or name)
    units = result.get("units")
    text = f"GANPaint learned the concept '{learned}'"
    if isinstance(units, list) and units:
        text += f" ({len(units)} units: {', '.join(str(u) for u in units[:10])}"
        text += "…)" if len(units) > 10 else ")"
    text += ". Use it with Add Concept… or Remove Concept…."
    if interactive:
        Gimp.message(text)
    return success((GObject.TYPE_STRING, learned))


def status_report(cfg):
    """Server Status… text: (report, ok)."""
    lines = [f"GANPaint server at {cfg.address}"]
    try:
        client_mod = gs.import_client()
    except RuntimeError as e:
        return str(e), False
    info, err = gs.probe(cfg.address, timeout_s=min(cfg.timeout_s, 5.0))
    if info is None:
        if getattr(err, "code", None) in ("unavailable", "timeout"):
            return gs.unavailable_message(cfg), False
        return gs.error_message(err, cfg), False
    lines.append(
        f"  version {info.get('server_version', '?')}, protocol "
        f"{info.get('protocol', '?')}, device {info.get('device', '?')}"
    )
    client = client_mod.Client(cfg.address, timeout_s=cfg.timeout_s)
    try:
        default = info.get("default_model")
        for m in client.models():
            mark = " (default)" if m.get("id") == default else ""
            loaded = ", loaded" if m.get("loaded") else ""
            lines.append(f"  model {m.get('id')}{mark} ({m.get('resolution', '?')} px{loaded})")
        try:
            concepts = client.concepts()
            names = ", ".join(c.get("name", "?") for c in concepts) or "(none yet)"
            lines.append(f"  concepts: {names}")
        except client_mod.ServerError as e:
            lines.append(f"  concepts: {gs.error_message(e, cfg)}")
        try:
            st = client.status()
            running, queued = st.get("running"), st.get("queued") or []
            if running:
                job = running.get("job", running) if isinstance(running, dict) else running
                lines.append(f"  busy with job {job}, {len(queued)} waiting")
            else:
                lines.append("  idle")
        except client_mod.ServerError:
            pass
    except client_mod.ServerError as e:
        lines.append(gs.error_message(e, cfg))
        return "\n".join(lines), False
    finally:
        client.close()
    limits = info.get("limits")
    if isinstance(limits, dict) and limits:
        lines.append("  limits: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
    return "\n".join(lines), True


def run_status(procedure, config, data):
    interactive = config.get_property("run-mode") == Gimp.RunMode.INTERACTIVE
    cfg = gs.load_config()
    if interactive and cfg.start_command:
        try:
            connect(cfg, interactive)  # offer what the installer configured: start it
        except RuntimeError:
            pass
    report, ok = status_report(cfg)
    if cfg.problems:
        report += "\n" + "\n".join(cfg.problems)
    if interactive:
        Gimp.message(report)
    if not ok and not interactive:
        return fail(procedure, report)
    return success((GObject.TYPE_STRING, report))


# -- registration ----------------------------------------------------------------------------------
class GANPaint(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        return [PROC_ADD, PROC_REMOVE, PROC_LEARN, PROC_RECONSTRUCT, PROC_STATUS]

    def do_create_procedure(self, name):
        if name == PROC_STATUS:
            procedure = Gimp.Procedure.new(self, name, Gimp.PDBProcType.PLUGIN, run_status, None)
            procedure.add_enum_argument(
                "run-mode",
                "Run mode",
                "The run mode",
                Gimp.RunMode,
                Gimp.RunMode.NONINTERACTIVE,
                RW,
            )
            procedure.add_string_return_value("report", "Report", "What the server said", "", RW)
            procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.ALWAYS)
            label, blurb = "Server _Status…", "Show whether the GANPaint server answers"
        else:
            run, data = {
                PROC_ADD: (run_edit, "add"),
                PROC_REMOVE: (run_edit, "remove"),
                PROC_LEARN: (run_learn, None),
                PROC_RECONSTRUCT: (run_reconstruct, None),
            }[name]
            procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, data)
            procedure.set_image_types("RGB*, GRAY*")
            procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
            label, blurb = self.add_arguments(procedure, name)
        procedure.set_menu_label(label)
        procedure.add_menu_path(MENU_PATH)
        procedure.set_documentation(
            blurb,
            blurb + ". Needs a running GANPaint server "
            "('ganpaint serve'); the source layer is never changed.",
            name,
        )
        procedure.set_attribution("GANPaint for GIMP authors", "GANPaint for GIMP authors", "2025")
        return procedure

    @staticmethod
    def add_arguments(procedure, name):
        if name in (PROC_ADD, PROC_REMOVE):
            op = "add" if name == PROC_ADD else "remove"
            procedure.add_string_argument(
                "concept", "Concept", f"Name of the concept to {op} (see Server Status…)", "", RW
            )
            strength = new_choice(
                ("low", "Low", "Few units of the concept"),
                ("med", "Medium", ""),
                ("high", "High", "Many units of the concept"),
            )
            procedure.add_choice_argument(
                "strength", "S_trength", "How strong the edit is", strength, "high", RW
            )
        if name == PROC_REMOVE:
            procedure.add_boolean_argument(
                "everywhere",
                "Remove _everywhere selected",
                "Switch the concept off in every part of the selection, as the published method "
                "does. Off: only where the model finds the concept, so removing something the "
                "selection does not show leaves it as it was",
                False,
                RW,
            )
        if name in (PROC_ADD, PROC_REMOVE, PROC_RECONSTRUCT):
            procedure.add_int_argument(
                "steps",
                "Fitting _steps (0 = server default)",
                "Fitting steps: more is slower and closer to the photo (0: the server's default; "
                "with Fast, a cap)",
                0,
                100000,
                0,
                RW,
            )
            procedure.add_boolean_argument(
                "fast",
                "_Fast (interactive)",
                "Fine-tune the photo's cached fit around the selection and stop early: seconds "
                "instead of minutes on a CPU. Off: the method as published",
                False,
                RW,
            )
        if name == PROC_LEARN:
            procedure.add_string_argument(
                "name",
                "Concept _name",
                "Name under which the server keeps the concept",
                "my-concept",
                RW,
            )
        procedure.add_string_argument(
            "model", "Model", "Model id ('' = the server's default)", "", RW
        )
        if name in (PROC_ADD, PROC_REMOVE):
            procedure.add_string_argument(
                "units",
                "Units",
                "Advanced: explicit unit numbers, e.g. '3,17,42' "
                "(used instead of the concept's own)",
                "",
                RW,
            )
            concepts = new_choice((NO_CONCEPT, "(pick a concept)", ""))
            procedure.add_choice_aux_argument(
                "concept-choice", "Conc_ept", "Concepts the server knows", concepts, NO_CONCEPT, RW
            )
        models = new_choice((SERVER_DEFAULT, "Server default", ""))
        procedure.add_choice_aux_argument(
            "model-choice", "_Model", "Model the server uses", models, SERVER_DEFAULT, RW
        )
        if name in (PROC_ADD, PROC_REMOVE, PROC_RECONSTRUCT):
            procedure.add_layer_return_value("layer", "Layer", "The new layer", False, RW)
            procedure.add_double_return_value(
                "psnr-keep", "PSNR keep", "Fit outside the edit, in dB", -1.0, 1000.0, 0.0, RW
            )
        else:
            procedure.add_string_return_value("concept", "Concept", "The learned concept", "", RW)
        return {
            PROC_ADD: ("_Add Concept…", "Paint a concept into the selection"),
            PROC_REMOVE: ("_Remove Concept…", "Remove a concept from the selection"),
            PROC_LEARN: (
                "_Learn Concept from Selection…",
                "Teach the server a new concept from the selected example",
            ),
            PROC_RECONSTRUCT: (
                "Re_construct (test the fit)…",
                "Show how well the model reproduces the photo",
            ),
        }[name]


quiet_final_broken_pipe()
status = Gimp.main(GANPaint.__gtype__, sys.argv)
# Leave without Python's finalisation: with GIMP 3.0.4's bindings, freeing the kept Gimp.Choice
# objects at exit crashes the process (a "fatal error: Segmentation fault" line in GIMP's log).
sys.stdout.flush()
sys.stderr.flush()
os._exit(status if isinstance(status, int) else 0)
