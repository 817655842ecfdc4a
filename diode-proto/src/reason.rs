//! Reasons with metric labels, each declared once: a reason enum names every label it can take in
//! one table (the [`reasons!`](crate::reasons) macro), counters are arrays indexed by the enum
//! ([`ReasonCounts`], [`AtomicReasonCounts`]), and `/metrics` can only ever show a label from that
//! table. Figures a variant carries (a sequence number, a length) stay in the log line.
//!
//! A duplicate label in a table fails to compile.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

/// An enum whose every value maps to one label of a fixed table.
pub trait Reason {
    /// Every label, in index order.
    const LABELS: &'static [&'static str];
    /// The position of this value's label in [`Reason::LABELS`].
    fn index(&self) -> usize;
    fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

/// Byte-wise string equality that runs at compile time.
pub const fn same_label(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Where `label` sits in `labels`; used at compile time, so a missing label fails the build.
#[allow(clippy::panic)] // only ever evaluated by the compiler, in the tables' constants
pub const fn position(labels: &[&str], label: &str) -> usize {
    let mut i = 0;
    while i < labels.len() {
        if same_label(labels[i], label) {
            return i;
        }
        i += 1;
    }
    panic!("label not in its table")
}

/// Whether no label appears twice.
pub const fn all_distinct(labels: &[&str]) -> bool {
    let mut i = 0;
    while i < labels.len() {
        let mut j = i + 1;
        while j < labels.len() {
            if same_label(labels[i], labels[j]) {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

/// `a` then `b`, as one table of `N` labels (`N` must be their total).
pub const fn concat<const N: usize>(a: &[&'static str], b: &[&'static str]) -> [&'static str; N] {
    assert!(a.len() + b.len() == N, "concat: N is not the total length");
    let mut out = [""; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < b.len() {
        out[i + j] = b[j];
        j += 1;
    }
    out
}

/// Declares the labels of a reason enum, once.
///
/// Fieldless enums list their variants (`ALL` is generated too):
/// `reasons!(DropReason { TooShort => "too_short", ... });`
///
/// Enums whose variants carry figures list patterns, and may end with one variant that wraps another
/// reason, whose labels are appended to the table:
/// `reasons!(BreakReason patterns { BreakReason::Gap { .. } => "gap", ... } wraps SourceAborted(AbortReason));`
#[macro_export]
macro_rules! reasons {
    ($ty:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in the order of [`Self::LABELS`].
            pub const ALL: [$ty; [$($label),+].len()] = [$($ty::$variant),+];
        }
        $crate::reasons!($ty patterns { $($ty::$variant => $label),+ });
    };
    ($ty:ident patterns { $($pat:pat => $label:literal),+ $(,)? }) => {
        impl $ty {
            /// Every label this reason can take.
            pub const LABELS: [&'static str; [$($label),+].len()] = [$($label),+];
            const _DISTINCT: () = assert!($crate::reason::all_distinct(&$ty::LABELS), "a label appears twice");

            pub const fn index(&self) -> usize {
                let () = Self::_DISTINCT;
                match self {
                    $($pat => { const I: usize = $crate::reason::position(&$ty::LABELS, $label); I })+
                }
            }
        }
        $crate::reasons!(@labelled $ty);
    };
    ($ty:ident patterns { $($pat:pat => $label:literal),+ $(,)? } wraps $wrap:ident ( $inner:ty )) => {
        impl $ty {
            const OWN_LABELS: [&'static str; [$($label),+].len()] = [$($label),+];
            /// Every label this reason can take: its own, then those of the reason it wraps.
            pub const LABELS: [&'static str; [$($label),+].len() + <$inner>::LABELS.len()] =
                $crate::reason::concat(&$ty::OWN_LABELS, &<$inner>::LABELS);
            const _DISTINCT: () = assert!($crate::reason::all_distinct(&$ty::LABELS), "a label appears twice");

            pub const fn index(&self) -> usize {
                let () = Self::_DISTINCT;
                match self {
                    $ty::$wrap(inner) => $ty::OWN_LABELS.len() + <$inner>::index(inner),
                    $($pat => { const I: usize = $crate::reason::position(&$ty::OWN_LABELS, $label); I })+
                }
            }
        }
        $crate::reasons!(@labelled $ty);
    };
    // What every form shares once `LABELS` and `index` exist.
    (@labelled $ty:ident) => {
        impl $ty {
            /// The metric label (snake_case, from [`Self::LABELS`]).
            pub const fn label(&self) -> &'static str {
                Self::LABELS[self.index()]
            }
        }

        impl $crate::reason::Reason for $ty {
            const LABELS: &'static [&'static str] = &$ty::LABELS;
            fn index(&self) -> usize {
                $ty::index(self)
            }
        }
    };
}

/// One counter per value of a reason `R` (`N` is `R::LABELS.len()`; the aliases beside each reason
/// spell it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReasonCounts<R: Reason, const N: usize> {
    counts: [u64; N],
    reason: PhantomData<R>,
}

impl<R: Reason, const N: usize> Default for ReasonCounts<R, N> {
    fn default() -> Self {
        assert_eq!(N, R::LABELS.len(), "ReasonCounts sized for another reason");
        ReasonCounts { counts: [0; N], reason: PhantomData }
    }
}

impl<R: Reason, const N: usize> std::fmt::Debug for ReasonCounts<R, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter().filter(|(_, n)| *n > 0)).finish()
    }
}

impl<R: Reason, const N: usize> ReasonCounts<R, N> {
    pub fn add(&mut self, reason: R, n: u64) {
        self.counts[reason.index()] += n;
    }

    /// The count of `reason` (figures a value carries do not matter).
    pub fn get(&self, reason: R) -> u64 {
        self.counts[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Every label with its count, zeros included, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        R::LABELS.iter().copied().zip(self.counts.iter().copied())
    }

    /// The labels counted at least once, as the status file shows them.
    pub fn nonzero(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.iter().filter(|(_, n)| *n > 0).collect()
    }
}

/// [`ReasonCounts`] that threads share.
pub struct AtomicReasonCounts<R: Reason, const N: usize> {
    counts: [AtomicU64; N],
    reason: PhantomData<R>,
}

impl<R: Reason, const N: usize> Default for AtomicReasonCounts<R, N> {
    fn default() -> Self {
        assert_eq!(N, R::LABELS.len(), "AtomicReasonCounts sized for another reason");
        AtomicReasonCounts { counts: std::array::from_fn(|_| AtomicU64::new(0)), reason: PhantomData }
    }
}

impl<R: Reason, const N: usize> std::fmt::Debug for AtomicReasonCounts<R, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.snapshot().iter().filter(|(_, n)| *n > 0)).finish()
    }
}

impl<R: Reason, const N: usize> AtomicReasonCounts<R, N> {
    pub fn add(&self, reason: R) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: R) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> ReasonCounts<R, N> {
        ReasonCounts { counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)), reason: PhantomData }
    }

    pub fn total(&self) -> u64 {
        self.snapshot().total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Inner {
        One,
        Two,
    }
    crate::reasons!(Inner { One => "one", Two => "two" });

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Outer {
        Carrying { figure: u64 },
        Plain,
        Wrapped(Inner),
    }
    crate::reasons!(Outer patterns { Outer::Carrying { .. } => "carrying", Outer::Plain => "plain" } wraps Wrapped(Inner));

    #[test]
    fn labels_are_one_table_and_counters_follow_it() {
        assert_eq!(Inner::ALL, [Inner::One, Inner::Two]);
        assert_eq!(Inner::One.label(), "one");
        assert_eq!(Outer::Plain.index(), 1);
        assert_eq!(Outer::LABELS, ["carrying", "plain", "one", "two"]);
        assert_eq!(Outer::Carrying { figure: 7 }.label(), "carrying");
        assert_eq!(Outer::Wrapped(Inner::Two).label(), "two");
        assert_eq!(Outer::Wrapped(Inner::Two).index(), 3);
        let mut counts = ReasonCounts::<Outer, { Outer::LABELS.len() }>::default();
        counts.add(Outer::Carrying { figure: 1 }, 2);
        counts.add(Outer::Carrying { figure: 9 }, 1);
        counts.add(Outer::Wrapped(Inner::One), 1);
        assert_eq!(counts.get(Outer::Carrying { figure: 0 }), 3);
        assert_eq!(counts.total(), 4);
        assert_eq!(counts.nonzero().into_iter().collect::<Vec<_>>(), [("carrying", 3), ("one", 1)]);
        let shared = AtomicReasonCounts::<Inner, 2>::default();
        shared.add(Inner::Two);
        assert_eq!(shared.snapshot().iter().collect::<Vec<_>>(), [("one", 0), ("two", 1)]);
    }

    #[test]
    fn table_checks_run_at_compile_time() {
        assert!(all_distinct(&["a", "b", "ab"]));
        assert!(!all_distinct(&["a", "b", "a"]));
        assert_eq!(position(&["x", "y"], "y"), 1);
        assert_eq!(concat::<3>(&["a"], &["b", "c"]), ["a", "b", "c"]);
    }
}
