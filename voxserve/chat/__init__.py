"""Voice chat: streaming speech to text, the language model, and the turn-taking session."""
