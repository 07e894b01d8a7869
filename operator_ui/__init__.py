"""Operator web page (Flask) for parl_robot: live view, episode state, labels, learning curves.

`state.OperatorState` aggregates what the graph publishes, `app.create_app` serves the page and
its JSON API, and `operator_ui_node` is the rclpy bridge that connects both to the ROS graph.
"""
