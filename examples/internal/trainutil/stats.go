package trainutil

import "math"

// Mean returns the arithmetic mean of v (NaN when v is empty).
func Mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// LogSoftmaxAt returns log softmax(row)[i], in float64 after subtracting the row's maximum,
// and the index of that maximum (the predicted class).
func LogSoftmaxAt(row []float32, i int) (logp float64, argmax int) {
	mx := row[0]
	for c, v := range row {
		if v > mx {
			argmax, mx = c, v
		}
	}
	sum := 0.0
	for _, v := range row {
		sum += math.Exp(float64(v - mx))
	}
	return float64(row[i]-mx) - math.Log(sum), argmax
}
