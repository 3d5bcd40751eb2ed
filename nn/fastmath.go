package nn

import "math"

// Float32 exp, sigmoid and tanh for the recurrent cells' gates, where
// float64 math.Exp and math.Tanh per element were a tenth of a READ
// step's time. They follow Cephes' expf and tanhf (Cody–Waite range
// reduction, minimax polynomials), accurate to a few float32 ulps (tested
// against float64 math over the whole range), as PyTorch's vectorised
// float32 kernels are.

// expf returns e^x in float32.
func expf(x float32) float32 {
	switch {
	case x > 88.72283:
		return float32(math.Inf(1))
	case x < -103.97208:
		return 0
	case x != x:
		return x
	}
	// x = n·ln2 + r, |r| ≤ ln2/2; ln2 split in two so r is exact.
	v := x*1.44269504088896341 + 0.5
	k := int32(v) // floor(v), without a float64 round trip
	if v < float32(k) {
		k--
	}
	n := float32(k)
	r := x - n*0.693359375 + n*2.12194440e-4
	z := r * r
	y := (((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r+5.0000001201e-1)*z + r + 1
	if k > 127 { // 2^128 is not a float32, y·2^127·2 may be
		return y * math.Float32frombits(254<<23) * 2
	}
	if k < -126 { // a subnormal result: scale in two steps
		return y * math.Float32frombits(uint32(k+126+127)<<23) * math.Float32frombits(1<<23)
	}
	return y * math.Float32frombits(uint32(k+127)<<23)
}

// sigmoid returns 1/(1+e^−x) in float32.
func sigmoid(x float32) float32 { return 1 / (1 + expf(-x)) }

// tanhf returns tanh x in float32: a polynomial near 0, where
// 1 − 2/(e^2x + 1) would lose the relative precision, else that form.
func tanhf(x float32) float32 {
	ax := x
	if ax < 0 {
		ax = -ax
	}
	if ax < 0.625 {
		z := x * x
		return ((((-5.70498872745e-3*z+2.06390887954e-2)*z-5.37397155531e-2)*z+1.33314422036e-1)*z-3.33332819422e-1)*z*x + x
	}
	if ax > 9.01091 { // tanh rounds to ±1 in float32
		return float32(math.Copysign(1, float64(x)))
	}
	t := 1 - 2/(expf(2*ax)+1)
	if x < 0 {
		return -t
	}
	return t
}
