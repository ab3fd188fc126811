"""The tokens each method generates on the image bench's classes and seeds, to prove a refactor changes none.

    python bench/tokens.py save before.pt            # on the old code
    python bench/tokens.py save after.pt             # on the new code
    python bench/tokens.py compare before.pt after.pt

Same settings as ``mmaccel bench image --methods ar,sjd,gsd,lantern,lantern-draft --num-images 50 --batch-size 10``
(labels ``i % 10``, batch ``b`` seeded from ``10 b``, guidance 2.0, temperature 0.8), but the tokens themselves
are kept, not only averages.
"""

import sys

import torch

METHODS = ["ar", "sjd", "gsd", "lantern", "lantern-draft"]


def save(path: str, num_images: int = 50, batch_size: int = 10) -> None:
    from mmaccel.image.pipeline import ImageARPipeline

    pipe = ImageARPipeline.from_pretrained()
    labels = [i % pipe.num_classes for i in range(num_images)]
    result = {}
    for method in METHODS:
        tokens, steps = [], []
        for start in range(0, num_images, batch_size):
            out = pipe(
                labels[start : start + batch_size],
                method=method,
                seed=start,
                progress=False,
                guidance_scale=2.0,
                temperature=0.8,
            )
            tokens.append(out.tokens)
            steps += [s["steps"] for s in out.stats]
        result[method] = (torch.cat(tokens), torch.tensor(steps))
        print(f"{method}: {sum(steps) / len(steps):.2f} forwards per image", flush=True)
    torch.save(result, path)


def compare(a: str, b: str) -> int:
    first, second = torch.load(a), torch.load(b)
    same = True
    for method in first:
        (ta, sa), (tb, sb) = first[method], second[method]
        equal = torch.equal(ta, tb) and torch.equal(sa, sb)
        same &= equal
        print(
            f"{method}: {tuple(ta.shape)} tokens {'identical' if torch.equal(ta, tb) else 'DIFFER'}, "
            f"forwards per image {sa.float().mean():.2f} vs {sb.float().mean():.2f}"
        )
    return 0 if same else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["save"] and len(sys.argv) == 3:
        save(sys.argv[2])
    elif sys.argv[1:2] == ["compare"] and len(sys.argv) == 4:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
