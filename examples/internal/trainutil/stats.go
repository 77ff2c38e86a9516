package trainutil

// Mean returns the arithmetic mean of v (NaN when v is empty).
func Mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}
