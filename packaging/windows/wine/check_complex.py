"""Check the C99 complex functions of the Wine prefix's ucrtbase.dll against CPython's cmath.

Run by packaging/build-windows-wine.sh with the Windows Python inside Wine, after the stand-in
ucrtbase.dll (ucrtbase_complex.c) is in place: every complex function numpy and SciPy may call,
in its double, float and long double (= double in MSVC) forms, on points off the branch cuts.
Exits non-zero, naming the function, on the first mismatch.
"""

import cmath
import ctypes
import sys


class D(ctypes.Structure):  # _Dcomplex and _Lcomplex
    _fields_ = [("re", ctypes.c_double), ("im", ctypes.c_double)]


class F(ctypes.Structure):  # _Fcomplex
    _fields_ = [("re", ctypes.c_float), ("im", ctypes.c_float)]


crt = ctypes.CDLL("ucrtbase")
# the stand-in is the ucrtbase in use: it forwards the rest to ucrtwine.dll, which is loaded with it
if not ctypes.windll.kernel32.GetModuleHandleW("ucrtwine.dll"):
    sys.exit("check_complex: ucrtwine.dll is not loaded: the ucrtbase.dll in use is not the stand-in")
POINTS = [complex(re, im) for re in (-2.5, -0.7, 0.3, 1.0, 3.2) for im in (-1.9, -0.4, 0.6, 2.2)]
POINTS += [complex(0.2, 1e-3), complex(-40.0, 0.5), complex(25.0, -1.0)]
UNARY = {
    "cacos": cmath.acos, "cacosh": cmath.acosh, "casin": cmath.asin, "casinh": cmath.asinh,
    "catan": cmath.atan, "catanh": cmath.atanh, "ccos": cmath.cos, "ccosh": cmath.cosh,
    "cexp": cmath.exp, "clog": cmath.log, "clog10": cmath.log10, "conj": lambda z: z.conjugate(),
    "cproj": lambda z: z, "csin": cmath.sin, "csinh": cmath.sinh, "csqrt": cmath.sqrt,
    "ctan": cmath.tan, "ctanh": cmath.tanh,
}
REAL = {"cabs": abs, "carg": cmath.phase, "creal": lambda z: z.real, "cimag": lambda z: z.imag}
failures = []


def close(got, want, tol):
    return abs(got - want) <= tol * max(1.0, abs(want))


def check(name, got, want, tol):
    if not close(got, want, tol):
        failures.append(f"{name}: got {got!r}, cmath says {want!r}")


def fn(name, restype, *argtypes):
    f = getattr(crt, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


checked = 0
for suffix, T, tol in (("", D, 1e-12), ("f", F, 2e-5), ("l", D, 1e-12)):
    for base, ref in UNARY.items():
        if base in ("ccosh", "csinh", "cexp") and suffix == "f":
            pts = [z for z in POINTS if abs(z.real) < 30]  # float overflow
        else:
            pts = POINTS
        f = fn(base + suffix, T, T)
        for z in pts:
            r = f(T(z.real, z.imag))
            check(f"{base}{suffix}({z})", complex(r.re, r.im), ref(z), tol)
            checked += 1
    real_t = ctypes.c_float if suffix == "f" else ctypes.c_double
    for base, ref in REAL.items():
        f = fn(base + suffix, real_t, T)
        for z in POINTS:
            check(f"{base}{suffix}({z})", f(T(z.real, z.imag)), ref(z), tol)
            checked += 1
    f = fn("cpow" + suffix, T, T, T)
    for z in POINTS[:10]:
        for w in (complex(2.0, 0.0), complex(0.5, -1.5)):
            r = f(T(z.real, z.imag), T(w.real, w.imag))
            check(f"cpow{suffix}({z}, {w})", complex(r.re, r.im), z**w, max(tol, 1e-11))
            checked += 1
for prefix, T, real_t in (("", D, ctypes.c_double), ("F", F, ctypes.c_float), ("L", D, ctypes.c_double)):
    build = fn(f"_{prefix}Cbuild", T, real_t, real_t)
    mulcc = fn(f"_{prefix}Cmulcc", T, T, T)
    mulcr = fn(f"_{prefix}Cmulcr", T, T, real_t)
    a, b = complex(1.5, -2.0), complex(-0.25, 3.0)
    r = build(1.5, -2.0)
    check(f"_{prefix}Cbuild", complex(r.re, r.im), a, 0)
    r = mulcc(T(a.real, a.imag), T(b.real, b.imag))
    check(f"_{prefix}Cmulcc", complex(r.re, r.im), a * b, 1e-6)
    r = mulcr(T(a.real, a.imag), 3.0)
    check(f"_{prefix}Cmulcr", complex(r.re, r.im), a * 3.0, 1e-6)
    checked += 3

if failures:
    print("\n".join(failures[:20]), file=sys.stderr)
    print(f"check_complex: {len(failures)} of {checked} results differ from cmath", file=sys.stderr)
    sys.exit(1)
print(f"check_complex: {checked} results of ucrtbase's complex functions agree with cmath")
