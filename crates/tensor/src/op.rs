//! Kernel descriptors shared by every backend: which pointwise function, which reduction,
//! which convolution geometry. Backends implement them; `ops` builds autograd on top.

use crate::math;

/// A pointwise function of one tensor, with its derivative. Activations live here so that
/// every backend gets fused single-pass kernels for them (forward and backward).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// natural logarithm
    Log,
    /// square root
    Sqrt,
    /// `|x|` (derivative sign(x), 0 at 0)
    Abs,
    /// hyperbolic tangent
    Tanh,
    /// logistic sigmoid
    Sigmoid,
    /// error function
    Erf,
    /// `ln(1+e^x)`
    Softplus,
    /// `1/x`
    Recip,
    /// `x²`
    Sqr,
    /// `x^p` for a constant exponent
    Powf(f32),
    /// `clamp(x, lo, hi)` (gradient passes strictly inside the range)
    Clamp(f32, f32),
    /// `a·x + b`
    Affine(f32, f32),
    /// `max(x, 0)`
    Relu,
    /// `min(max(x, 0), 6)`
    Relu6,
    /// `x` if `x > 0` else `slope·x`
    LeakyRelu(f32),
    /// `x` if `x > 0` else `alpha·(e^x − 1)`
    Elu(f32),
    /// `x·σ(x)`
    Silu,
    /// exact GELU `0.5·x·(1+erf(x/√2))`
    Gelu,
    /// tanh-approximated GELU `0.5·x·(1+tanh(√(2/π)(x+0.044715x³)))`
    GeluTanh,
    /// `x·relu6(x+3)/6`
    Hardswish,
    /// `relu6(x+3)/6`
    Hardsigmoid,
    /// `x·tanh(softplus(x))`
    Mish,
    /// arctangent (CIoU's aspect-ratio term)
    Atan,
}

impl UnaryOp {
    /// Short name, for error messages and benchmarks.
    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "neg",
            Exp => "exp",
            Log => "log",
            Sqrt => "sqrt",
            Abs => "abs",
            Tanh => "tanh",
            Sigmoid => "sigmoid",
            Erf => "erf",
            Softplus => "softplus",
            Recip => "recip",
            Sqr => "sqr",
            Powf(_) => "powf",
            Clamp(..) => "clamp",
            Affine(..) => "affine",
            Relu => "relu",
            Relu6 => "relu6",
            LeakyRelu(_) => "leaky_relu",
            Elu(_) => "elu",
            Silu => "silu",
            Gelu => "gelu",
            GeluTanh => "gelu_tanh",
            Hardswish => "hardswish",
            Hardsigmoid => "hardsigmoid",
            Mish => "mish",
            Atan => "atan",
        }
    }

    /// Number of variants (codes are `0..COUNT`).
    pub(crate) const COUNT: u8 = 25;

    /// A compact form for kernels specialised by const generics: (variant code, param a, param b).
    pub(crate) fn code(self) -> (u8, f32, f32) {
        use UnaryOp::*;
        match self {
            Neg => (0, 0.0, 0.0),
            Exp => (1, 0.0, 0.0),
            Log => (2, 0.0, 0.0),
            Sqrt => (3, 0.0, 0.0),
            Abs => (4, 0.0, 0.0),
            Tanh => (5, 0.0, 0.0),
            Sigmoid => (6, 0.0, 0.0),
            Erf => (7, 0.0, 0.0),
            Softplus => (8, 0.0, 0.0),
            Recip => (9, 0.0, 0.0),
            Sqr => (10, 0.0, 0.0),
            Powf(p) => (11, p, 0.0),
            Clamp(a, b) => (12, a, b),
            Affine(a, b) => (13, a, b),
            Relu => (14, 0.0, 0.0),
            Relu6 => (15, 0.0, 0.0),
            LeakyRelu(s) => (16, s, 0.0),
            Elu(a) => (17, a, 0.0),
            Silu => (18, 0.0, 0.0),
            Gelu => (19, 0.0, 0.0),
            GeluTanh => (20, 0.0, 0.0),
            Hardswish => (21, 0.0, 0.0),
            Hardsigmoid => (22, 0.0, 0.0),
            Mish => (23, 0.0, 0.0),
            Atan => (24, 0.0, 0.0),
        }
    }

    /// Inverse of [`UnaryOp::code`]; with a constant code it folds to one variant.
    #[inline(always)]
    pub(crate) fn from_code(c: u8, a: f32, b: f32) -> UnaryOp {
        use UnaryOp::*;
        match c {
            0 => Neg,
            1 => Exp,
            2 => Log,
            3 => Sqrt,
            4 => Abs,
            5 => Tanh,
            6 => Sigmoid,
            7 => Erf,
            8 => Softplus,
            9 => Recip,
            10 => Sqr,
            11 => Powf(a),
            12 => Clamp(a, b),
            13 => Affine(a, b),
            14 => Relu,
            15 => Relu6,
            16 => LeakyRelu(a),
            17 => Elu(a),
            18 => Silu,
            19 => Gelu,
            20 => GeluTanh,
            21 => Hardswish,
            22 => Hardsigmoid,
            23 => Mish,
            _ => Atan,
        }
    }

    /// The function at `x`.
    #[inline(always)]
    pub fn f(self, x: f32) -> f32 {
        use UnaryOp::*;
        match self {
            Neg => -x,
            Exp => math::exp(x),
            Log => x.ln(),
            Sqrt => x.sqrt(),
            Abs => x.abs(),
            Tanh => math::tanh(x),
            Sigmoid => math::sigmoid(x),
            Erf => math::erf(x),
            Softplus => math::softplus(x),
            Recip => 1.0 / x,
            Sqr => x * x,
            Powf(p) => x.powf(p),
            Clamp(lo, hi) => x.max(lo).min(hi),
            Affine(a, b) => a * x + b,
            Relu => x.max(0.0),
            Relu6 => x.clamp(0.0, 6.0),
            LeakyRelu(s) => {
                if x > 0.0 {
                    x
                } else {
                    s * x
                }
            }
            Elu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a * (math::exp(x) - 1.0)
                }
            }
            Silu => x * math::sigmoid(x),
            Gelu => 0.5 * x * (1.0 + math::erf(x * math::FRAC_1_SQRT_2)),
            // 0.5·(1+tanh(u)) = σ(2u): one exponential, no cancellation.
            GeluTanh => x * math::sigmoid(2.0 * math::SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)),
            Hardswish => x * (x + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0),
            Hardsigmoid => (x + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0),
            Mish => x * math::tanh_softplus(x),
            Atan => x.atan(),
        }
    }

    /// The derivative `f'(x)`, from the input alone (backward needs no saved output).
    #[inline(always)]
    pub fn df(self, x: f32) -> f32 {
        use UnaryOp::*;
        match self {
            Neg => -1.0,
            Exp => math::exp(x),
            Log => 1.0 / x,
            Sqrt => 0.5 / x.sqrt(),
            Abs => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Tanh => {
                let t = math::tanh(x);
                1.0 - t * t
            }
            Sigmoid => {
                let s = math::sigmoid(x);
                s * (1.0 - s)
            }
            Erf => 2.0 * std::f32::consts::FRAC_2_SQRT_PI * 0.5 * math::exp(-x * x),
            Softplus => math::sigmoid(x),
            Recip => -1.0 / (x * x),
            Sqr => 2.0 * x,
            Powf(p) => p * x.powf(p - 1.0),
            Clamp(lo, hi) => {
                if x > lo && x < hi {
                    1.0
                } else {
                    0.0
                }
            }
            Affine(a, _) => a,
            Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Relu6 => {
                if x > 0.0 && x < 6.0 {
                    1.0
                } else {
                    0.0
                }
            }
            LeakyRelu(s) => {
                if x > 0.0 {
                    1.0
                } else {
                    s
                }
            }
            Elu(a) => {
                if x > 0.0 {
                    1.0
                } else {
                    a * math::exp(x)
                }
            }
            Silu => {
                let s = math::sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            Gelu => {
                let cdf = 0.5 * (1.0 + math::erf(x * math::FRAC_1_SQRT_2));
                cdf + x * math::FRAC_1_SQRT_2PI * math::exp(-0.5 * x * x)
            }
            GeluTanh => {
                // f = x·σ(2u), u = k(x + c x³); f' = σ + x·σ(1−σ)·2k(1 + 3c x²)
                let k = 2.0 * math::SQRT_2_OVER_PI;
                let s = math::sigmoid(k * (x + 0.044_715 * x * x * x));
                s + x * s * (1.0 - s) * k * (1.0 + 3.0 * 0.044_715 * x * x)
            }
            Hardswish => {
                if x < -3.0 {
                    0.0
                } else if x > 3.0 {
                    1.0
                } else {
                    (2.0 * x + 3.0) * (1.0 / 6.0)
                }
            }
            Hardsigmoid => {
                if x > -3.0 && x < 3.0 {
                    1.0 / 6.0
                } else {
                    0.0
                }
            }
            Mish => {
                // d/dx x·t(x), t = tanh(sp(x)): t + x·(1−t²)·σ(x)
                let t = math::tanh_softplus(x);
                t + x * (1.0 - t * t) * math::sigmoid(x)
            }
            Atan => 1.0 / (1.0 + x * x),
        }
    }
}

/// A pointwise function of two broadcast tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a − b`
    Sub,
    /// `a · b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)`
    Maximum,
    /// `min(a, b)`
    Minimum,
    /// `a^b`
    Pow,
    /// `1` where `a == b` else `0`
    Eq,
    /// `1` where `a > b` else `0`
    Gt,
    /// `1` where `a >= b` else `0`
    Ge,
    /// `1` where `a < b` else `0`
    Lt,
    /// `1` where `a <= b` else `0`
    Le,
}

impl BinaryOp {
    /// The function at `(a, b)`.
    #[inline(always)]
    pub fn f(self, a: f32, b: f32) -> f32 {
        use BinaryOp::*;
        match self {
            Add => a + b,
            Sub => a - b,
            Mul => a * b,
            Div => a / b,
            Maximum => a.max(b),
            Minimum => a.min(b),
            Pow => a.powf(b),
            Eq => (a == b) as u8 as f32,
            Gt => (a > b) as u8 as f32,
            Ge => (a >= b) as u8 as f32,
            Lt => (a < b) as u8 as f32,
            Le => (a <= b) as u8 as f32,
        }
    }

    /// Short name, for errors.
    pub fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Maximum => "maximum",
            Minimum => "minimum",
            Pow => "pow",
            Eq => "eq",
            Gt => "gt",
            Ge => "ge",
            Lt => "lt",
            Le => "le",
        }
    }
}

/// A reduction over axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

/// Geometry of a 2-D convolution (PyTorch semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Stride (rows, cols).
    pub stride: (usize, usize),
    /// Zero padding on each side (rows, cols).
    pub padding: (usize, usize),
    /// Dilation (rows, cols).
    pub dilation: (usize, usize),
    /// Groups: input and output channels are split into this many independent parts.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Square stride/padding, no dilation, one group.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride: (stride, stride),
            padding: (padding, padding),
            ..Self::default()
        }
    }
    /// Same geometry with `groups` groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    /// Same geometry with square dilation `d`.
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
}

/// Full geometry of one convolution call, derived from shapes and [`Conv2dParams`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// The call's parameters.
    pub p: Conv2dParams,
}

impl ConvGeom {
    /// Input channels per group.
    pub fn cin_g(&self) -> usize {
        self.c_in / self.p.groups
    }
    /// Output channels per group.
    pub fn cout_g(&self) -> usize {
        self.c_out / self.p.groups
    }
    /// Rows of the im2col matrix of one group: `cin_g·kh·kw`.
    pub fn k(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }
    /// Whether the convolution is a plain matrix product (1×1, stride 1, no padding).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.p.stride == (1, 1) && self.p.padding == (0, 0)
    }
    /// Multiply-accumulates of the forward pass.
    pub fn macs(&self) -> usize {
        self.n * self.c_out * self.oh * self.ow * self.k()
    }
}

/// Geometry of a 2-D max pooling (PyTorch semantics, floor mode, `-inf` padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dParams {
    /// Window (rows, cols).
    pub kernel: (usize, usize),
    /// Stride (rows, cols).
    pub stride: (usize, usize),
    /// Padding on each side (rows, cols).
    pub padding: (usize, usize),
}

impl Pool2dParams {
    /// Square window `k`, stride `s`, padding `p`.
    pub fn new(k: usize, s: usize, p: usize) -> Self {
        Self {
            kernel: (k, k),
            stride: (s, s),
            padding: (p, p),
        }
    }
}
