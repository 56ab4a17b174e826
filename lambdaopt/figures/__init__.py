"""The figures a run logs (PNG + PDF): λ trajectories and λ vs frequency (lambdas.py), singular values over
training (spectrum.py), in one style (style.py). Imported only when a figure is drawn: matplotlib and
scipy.stats add seconds to every start."""
