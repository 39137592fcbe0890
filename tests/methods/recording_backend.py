"""A backend wrapper for latent tests: what each agent was really given."""


class ThoughtRecorder:
    """The real backend, keeping every latent input it is given."""

    def __init__(self, backend):
        self.backend, self.thoughts = backend, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def step_embeds(self, state, embeds, visible=None):
        self.thoughts.append(embeds.clone())
        return self.backend.step_embeds(state, embeds, visible)
