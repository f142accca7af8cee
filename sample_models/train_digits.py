"""Train ``digits_ca`` and write its weights, evaluation set and calibration folder.

``python -m sample_models.train_digits`` (about 40 s on one CPU thread) trains
``sample_models.digits.DigitsCA`` on the 1437 training digits (Adam, ``EPOCHS`` epochs, batch
64, random shifts of up to 2 pixels, seed ``SEED``, one thread), prints its accuracy on the
360 held-out digits and writes, under ``--out`` (default ``sample_models/data``):

- ``digits_ca.pt``: the state dict;
- ``digits_eval/<digit>/<index>.png``: the held-out digits, ImageFolder layout;
- ``digits_calibration/<index>.png``: ``CALIBRATION`` training digits, the first of each
  class in turn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sample_models.digits import DATA, DigitsCA, digit_images, held_out, normalise

SEED = 0
EPOCHS = 25
BATCH = 64
SHIFT = 2
CALIBRATION = 32


def _shifted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to ``SHIFT`` pixels in H and W (zero-padded: the background)."""
    padded = F.pad(x, (SHIFT,) * 4, value=float(x.amin()))
    h, w = x.shape[2:]
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * SHIFT + 1, (len(x), 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


def train(epochs: int = EPOCHS, seed: int = SEED) -> DigitsCA:
    """``DigitsCA`` trained on the training digits, deterministically (one thread, seeded)."""
    images, labels = digit_images()
    train_mask = ~held_out(len(images))
    x, y = normalise(images[train_mask]), torch.from_numpy(labels[train_mask])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsCA()
            generator = torch.Generator().manual_seed(seed)
            optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
            steps = epochs * -(-len(x) // BATCH)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
            model.train()
            for _ in range(epochs):
                order = torch.randperm(len(x), generator=generator)
                for start in range(0, len(x), BATCH):
                    batch = order[start : start + BATCH]
                    loss = F.cross_entropy(model(_shifted(x[batch], generator)), y[batch])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@torch.no_grad()
def held_out_accuracy(model: torch.nn.Module) -> float:
    """Top-1 accuracy of ``model`` on the held-out digits."""
    images, labels = digit_images()
    mask = held_out(len(images))
    logits = model(normalise(images[mask]))
    return float((logits.argmax(1).numpy() == labels[mask]).mean())


def write_data(out: Path) -> None:
    """Write the evaluation set and the calibration folder of the digits under ``out``."""
    from PIL import Image

    images, labels = digit_images()
    mask = held_out(len(images))
    for index in np.flatnonzero(mask):
        folder = out / "digits_eval" / str(labels[index])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index]).save(folder / f"{index:04d}.png", optimize=True)
    calibration = out / "digits_calibration"
    calibration.mkdir(parents=True, exist_ok=True)
    train_index = np.flatnonzero(~mask)
    for index in train_index[:CALIBRATION]:
        Image.fromarray(images[index]).save(calibration / f"{index:04d}.png", optimize=True)


def main() -> None:
    """Train, report the held-out accuracy, write weights and data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA, help="folder to write into")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    model = train(args.epochs)
    print(f"held-out top-1 accuracy: {held_out_accuracy(model):.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "digits_ca.pt")
    write_data(args.out)


if __name__ == "__main__":
    main()
