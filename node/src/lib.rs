//! The node side of the hsmd protocol.
