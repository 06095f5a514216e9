//! Names of the values of a field-less enum (attribute words, `.rules` families).

/// For an enum whose every value has one name: `NAMES` (each value with its name, in order),
/// `name` (an exhaustive match: a value added without a name does not compile), `from_name`
/// and `names` (all of them, comma-separated, for messages).
macro_rules! named_values {
    ($ty:ident { $($value:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value with its name.
            pub const NAMES: &'static [($ty, &'static str)] = &[$(($ty::$value, $name)),+];

            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$value => $name),+
                }
            }

            pub fn from_name(name: &str) -> Option<$ty> {
                match name {
                    $($name => Some($ty::$value),)+
                    _ => None,
                }
            }

            /// The names, comma-separated (for messages).
            pub fn names() -> String {
                $ty::NAMES.iter().map(|v| v.1).collect::<Vec<_>>().join(", ")
            }
        }
    };
}
