"""Small training scripts that the attach tests write out and run, beside examples/.

Each prints its own counts, as the examples do, so a record can be checked against them.
"""

import textwrap

# A loop with no DataLoader that says where its epochs end, in one line.
MARK_EPOCH = textwrap.dedent("""
    import torch
    import dcnprobe

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(40, 4), torch.randn(40, 1)
    for epoch in (1, 2, 3):
        for start in range(0, 40, 8):
            loss = torch.nn.functional.mse_loss(model(x[start:start + 8]), y[start:start + 8])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: 5 batches")
        dcnprobe.mark_epoch()
""")

# A loop that measures itself with the Probe API: the attach must leave it alone.
PROBE_API = textwrap.dedent("""
    import torch
    from dcnprobe import Probe

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    with Probe("ignored-the-launcher-decides") as probe:
        for epoch in (1, 2):
            for x, y in probe.loader(loader):
                with probe.phase("forward"):
                    loss = torch.nn.functional.mse_loss(model(x), y)
                with probe.phase("backward"):
                    loss.backward()
                with probe.phase("optimizer"):
                    opt.step()
                    opt.zero_grad()
                probe.end_batch()
    print("epochs 2, batches 8")
""")

# Trains one epoch of 4 batches, then fails in the 4th batch of epoch 2.
FAILS_IN_EPOCH_2 = textwrap.dedent("""
    import torch

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    for epoch in (1, 2):
        for batch, (x, y) in enumerate(loader):
            if epoch == 2 and batch == 3:
                raise RuntimeError("the loss went NaN")
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
""")

# Trains with a DataLoader, and starts a nested Python that trains too: only this one records.
STARTS_A_NESTED_TRAINER = textwrap.dedent("""
    import subprocess, sys
    import torch

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    for epoch in (1, 2):
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch == 1:
            subprocess.run([sys.executable, NESTED, "--rows", "256", "--epochs", "1"], check=True)
""")
