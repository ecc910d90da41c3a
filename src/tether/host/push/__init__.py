"""Web Push from the host: its VAPID key, the browsers' subscriptions, which events become pushes,
and the sender (ARCHITECTURE §8b)."""
