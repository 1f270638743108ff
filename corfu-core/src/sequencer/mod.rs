//! The global sequencer (CORFU §3.2, Tango §4): hands out log positions,
//! keeps per-stream tails and backpointers, and resolves transactions with
//! conditional tokens. Soft state: a new sequencer bootstraps from the tails
//! the log units report when sealed.
