//! Refetch one repository from the registry into the store; scan them all.
