package web

import "net/http"

// Router sends each request to the handler registered for its path.
type Router struct {
	routes map[string]http.Handler
}

// NewRouter makes an empty router.
func NewRouter() *Router {
	return &Router{routes: map[string]http.Handler{}}
}

// Handle registers a handler for a path.
func (r *Router) Handle(path string, h http.Handler) {
	r.routes[path] = h
}

// ServeHTTP dispatches the request to the matching handler, or answers 404.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if h, ok := r.routes[req.URL.Path]; ok {
		h.ServeHTTP(w, req)
		return
	}
	http.NotFound(w, req)
}
