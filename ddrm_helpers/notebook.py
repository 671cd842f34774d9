"""What the notebook needs beyond one call per config: the device note, a control panel, uploads,
the three configs side by side, and the closing summary.
"""

from __future__ import annotations

import io

import torch

from .config import available_configs, load_config
from .display import in_notebook, show_grid, show_results
from .paths import DEMO_DIR
from .runner import RunResult, Skipped, demo_entries, run_config


def device_report() -> str:
    """Which device will run, and what that means for the waiting time."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        text = (f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB). A config restores its demo "
                "images in seconds to a minute; the first run of a config also loads its checkpoint.")
    else:
        text = ("No GPU: everything runs on the CPU. A full-size model takes seconds per step, so one config "
                "(20 steps, a few images) takes several minutes. In Colab: Runtime > Change runtime type > "
                "a GPU, then run all again.")
    print(text)
    return text


def restoration_panel(config: str = "celeba_hq"):
    """An ipywidgets panel: choose config, degradation, noise, steps and image, then Run."""
    import ipywidgets as w
    from IPython.display import display

    from .degradations import available_degradations

    demo = {e["title"]: str(DEMO_DIR / e["file"]) for e in demo_entries()}
    controls = {
        "config": w.Dropdown(options=available_configs(), value=config, description="config"),
        "task": w.Dropdown(options=list(available_degradations()), value=load_config(config).ddrm.task,
                           description="degradation"),
        "sigma_y": w.FloatSlider(value=0.05, min=0.0, max=0.5, step=0.01, description="sigma_y"),
        "steps": w.IntSlider(value=20, min=1, max=100, description="steps"),
        "seed": w.IntText(value=0, description="seed"),
        "image": w.Dropdown(options=list(demo), description="image"),
    }
    upload = w.FileUpload(accept="image/*", multiple=False, description="or upload")
    button = w.Button(description="Run", button_style="primary")
    output = w.Output()

    def run(_=None):
        output.clear_output()
        with output:
            uploaded = uploaded_images(upload)
            images = uploaded or [demo[controls["image"].value]]
            result = run_config(controls["config"].value, images=images, task=controls["task"].value,
                                sigma_y=controls["sigma_y"].value, steps=controls["steps"].value,
                                seed=controls["seed"].value)
            show_results(result)

    button.on_click(run)
    panel = w.VBox([w.HBox([controls["config"], controls["task"]]),
                    w.HBox([controls["sigma_y"], controls["steps"], controls["seed"]]),
                    w.HBox([controls["image"], upload]), button, output])
    panel.run = run  # so that code (and tests) can press the button
    panel.controls = controls
    if in_notebook():
        display(panel)
    return panel


def upload_widget(description: str = "Upload", multiple: bool = True):
    """A file-upload button (works in Jupyter, VS Code and Colab); read it with `uploaded_images`."""
    import ipywidgets as w
    from IPython.display import display

    widget = w.FileUpload(accept="image/*", multiple=multiple, description=description)
    if in_notebook():
        display(widget)
    return widget


def uploaded_images(widget) -> list:
    """The images in an upload widget (or a Colab ``files.upload()`` dict), as PIL images."""
    from PIL import Image

    if isinstance(widget, dict):  # google.colab.files.upload(): {name: bytes}
        items = list(widget.items())
    else:
        value = widget.value
        entries = value.values() if isinstance(value, dict) else value  # ipywidgets 7 or 8
        items = [(e.get("name", e.get("metadata", {}).get("name", "upload")), e["content"]) for e in entries]
    images = []
    for name, content in items:
        image = Image.open(io.BytesIO(bytes(content)))
        image.load()
        image.filename = name
        images.append(image)
    return images


def compare_configs(image, task: str = "sr4", sigma_y: float = 0.05, steps: int | None = None, seed: int = 0,
                    configs=None, show: bool = True, **kwargs) -> dict:
    """The same image and degradation through every config, and one grid to compare them."""
    results = {name: run_config(name, images=[image], task=task, sigma_y=sigma_y, steps=steps, seed=seed,
                                **kwargs)
               for name in configs or available_configs()}
    ran = {name: r for name, r in results.items() if not r.skipped}
    if not ran:
        print("No config could run; see the checkpoint table above.")
        return results
    first = next(iter(ran.values()))
    columns = {"original": first.original, f"degraded ({task})": first.degraded}
    notes = {}
    for r in ran.values():
        columns[r.display] = r.restored
        notes[r.display] = [f"PSNR {r.metrics[0]['psnr_restored']:.2f} dB, SSIM {r.metrics[0]['ssim_restored']:.3f}"]
    skipped = [r.display for r in results.values() if r.skipped]
    title = f"{task}, sigma_y {sigma_y:g}" + (f" (skipped: {', '.join(skipped)})" if skipped else "")
    show_grid(columns, [first.names[0]], title=title, notes=notes, show=show)
    return results


def run_summary(*results: RunResult | Skipped | dict | None) -> str:
    """What ran (with its mean PSNR/SSIM and where it was saved) and what was skipped and why."""
    flat = []
    for r in results:
        if isinstance(r, dict):
            flat.extend(r.values())
        elif r is not None:
            flat.append(r)
    lines = []
    for r in flat:
        if r.skipped:
            lines.append(f"- {r.display}: skipped: {r.reason}")
        else:
            scores = ""
            if r.metrics:
                mean_psnr = sum(m["psnr_restored"] for m in r.metrics) / len(r.metrics)
                mean_ssim = sum(m["ssim_restored"] for m in r.metrics) / len(r.metrics)
                scores = f": PSNR {mean_psnr:.2f} dB, SSIM {mean_ssim:.3f}"
            where = f", saved in {r.out_dir}" if r.out_dir else ""
            samples = f", {r.num_samples} samples" if r.num_samples > 1 else ""
            inputs = "a photo" if r.from_photo else f"{len(r.names)} image(s)"
            lines.append(f"- {r.display}: ran {r.task} (sigma_y {r.sigma_y:.3g}, {r.steps} steps{samples}) on "
                         f"{inputs}{scores}{where}")
    text = "\n".join(lines) if lines else "Nothing ran yet."
    print(text)
    return text
