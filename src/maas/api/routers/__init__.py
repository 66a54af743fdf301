"""One router per protocol or resource."""
